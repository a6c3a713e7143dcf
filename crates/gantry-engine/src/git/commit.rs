//! [`CommitInfo`]: the facts of a commit that the predefined `CI_COMMIT_*` variables need,
//! parsed from the raw commit object (no extra process).

use gantry_pipeline::trigger;

/// One commit, as the pipeline's variables need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub sha: String,
    /// The first 8 characters (`CI_COMMIT_SHORT_SHA`).
    pub short_sha: String,
    /// The first line of the message (`CI_COMMIT_TITLE`).
    pub title: String,
    /// The whole message without trailing blank space (`CI_COMMIT_MESSAGE`).
    pub message: String,
    pub author_name: String,
    pub author_email: String,
    /// The committer date in UTC, ISO 8601 with `Z`, as GitLab's `CI_COMMIT_TIMESTAMP`
    /// (`Commit#timestamp` is `committed_date.xmlschema`).
    pub timestamp: String,
    /// The author date in the author's time zone (`2024-01-02T03:04:05+01:00`).
    pub author_date: String,
    pub parents: Vec<String>,
}

impl CommitInfo {
    /// The trigger's view of this commit; `before_sha` is the previous tip for pushes.
    pub fn to_trigger(&self, before_sha: Option<&str>) -> trigger::CommitInfo {
        trigger::CommitInfo {
            sha: self.sha.clone(),
            before_sha: before_sha.map_or_else(|| "0".repeat(40), str::to_string),
            message: self.message.clone(),
            author_name: self.author_name.clone(),
            author_email: self.author_email.clone(),
            timestamp: self.timestamp.clone(),
        }
    }
}

/// Parses a raw commit object (`cat-file commit`).
pub(crate) fn parse(sha: &str, raw: &[u8]) -> Option<CommitInfo> {
    let text = String::from_utf8_lossy(raw);
    let (headers, message) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut parents = Vec::new();
    let mut author = None;
    let mut committer = None;
    for line in headers.lines() {
        // Continuation lines (a signature) start with a space.
        if let Some(p) = line.strip_prefix("parent ") {
            parents.push(p.trim().to_string());
        } else if let Some(a) = line.strip_prefix("author ") {
            author = parse_person(a);
        } else if let Some(c) = line.strip_prefix("committer ") {
            committer = parse_person(c);
        }
    }
    let (author_name, author_email, a_secs, a_tz) = author?;
    let (_, _, c_secs, _) = committer.unwrap_or((String::new(), String::new(), a_secs, 0));
    let message = message.trim_end().to_string();
    Some(CommitInfo {
        sha: sha.to_string(),
        short_sha: sha.chars().take(8).collect(),
        title: message.lines().next().unwrap_or("").to_string(),
        message,
        author_name,
        author_email,
        timestamp: iso8601(c_secs, None),
        author_date: iso8601(a_secs, Some(a_tz)),
        parents,
    })
}

/// `Name <email> 1700000000 +0100` → (name, email, seconds, offset in minutes).
fn parse_person(s: &str) -> Option<(String, String, i64, i32)> {
    let lt = s.find('<')?;
    let gt = lt + s[lt..].find('>')?;
    let name = s[..lt].trim().to_string();
    let email = s[lt + 1..gt].to_string();
    let mut rest = s[gt + 1..].split_whitespace();
    let secs = rest.next()?.parse().ok()?;
    let tz = rest.next().unwrap_or("+0000");
    let sign = if tz.starts_with('-') { -1 } else { 1 };
    let digits = tz.trim_start_matches(['+', '-']);
    let hhmm: i32 = digits.parse().unwrap_or(0);
    Some((name, email, secs, sign * (hhmm / 100 * 60 + hhmm % 100)))
}

/// Seconds since the epoch as ISO 8601: UTC with `Z` when `offset_min` is `None`.
fn iso8601(secs: i64, offset_min: Option<i32>) -> String {
    let off = offset_min.unwrap_or(0);
    let local = secs + i64::from(off) * 60;
    let days = local.div_euclid(86_400);
    let tod = local.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let time = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    );
    match offset_min {
        None => format!("{time}Z"),
        Some(o) => {
            let sign = if o < 0 { '-' } else { '+' };
            format!("{time}{sign}{:02}:{:02}", o.abs() / 60, o.abs() % 60)
        }
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(iso8601(0, None), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_643_647_675, None), "2022-01-31T16:47:55Z");
        assert_eq!(
            iso8601(1_643_647_675, Some(60)),
            "2022-01-31T17:47:55+01:00"
        );
        assert_eq!(
            iso8601(1_709_164_800, Some(-330)),
            "2024-02-28T18:30:00-05:30"
        );
        assert_eq!(iso8601(951_782_400, None), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn raw_commit() {
        let raw = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
parent 1111111111111111111111111111111111111111\n\
parent 2222222222222222222222222222222222222222\n\
author Ada L <ada@example.com> 1643647675 +0100\n\
committer Bob <bob@example.com> 1643651275 -0200\n\
gpgsig -----BEGIN PGP SIGNATURE-----\n \n abc\n -----END PGP SIGNATURE-----\n\
\n\
Fix the thing\n\nLonger text.\n\n";
        let c = parse(&"f".repeat(40), raw).unwrap();
        assert_eq!(c.short_sha, "ffffffff");
        assert_eq!(c.title, "Fix the thing");
        assert_eq!(c.message, "Fix the thing\n\nLonger text.");
        assert_eq!(c.author_name, "Ada L");
        assert_eq!(c.author_email, "ada@example.com");
        assert_eq!(c.timestamp, "2022-01-31T17:47:55Z");
        assert_eq!(c.author_date, "2022-01-31T17:47:55+01:00");
        assert_eq!(c.parents.len(), 2);
        let t = c.to_trigger(None);
        assert_eq!(t.before_sha, "0".repeat(40));
        assert_eq!(t.timestamp, c.timestamp);
    }
}
