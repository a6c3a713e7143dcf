//! Human durations as GitLab accepts them in `timeout`, `start_in`, `expire_in` and
//! `auto_stop_in`: `"1h 30m"`, `"3 hours"`, `"90 minutes"`, `"2 days 4h"`, `"1 week"`,
//! `"3600"` (seconds), `"1h30m15s"`.

/// Parses a duration to seconds, or `None` when it is not one.
pub fn parse(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    if s.is_empty() {
        return None;
    }
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let mut total: f64 = 0.0;
    let mut rest = s.as_str();
    let mut any = false;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if let Some(r) = rest.strip_prefix("and") {
            rest = r;
            continue;
        }
        if rest.is_empty() {
            break;
        }
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult = match unit {
            "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "wk" | "wks" | "week" | "weeks" => 604_800.0,
            "mo" | "mos" | "month" | "months" => 2_592_000.0,
            "y" | "yr" | "yrs" | "year" | "years" => 31_536_000.0,
            _ => return None,
        };
        total += n * mult;
        any = true;
    }
    any.then_some(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn gitlab_examples() {
        assert_eq!(parse("3600"), Some(3600));
        assert_eq!(parse("1h 30m"), Some(5400));
        assert_eq!(parse("1h30m15s"), Some(5415));
        assert_eq!(parse("3 hours"), Some(10800));
        assert_eq!(parse("90 minutes"), Some(5400));
        assert_eq!(parse("2 days 4h"), Some(187_200));
        assert_eq!(parse("1 week"), Some(604_800));
        assert_eq!(parse("1 day and 2 hours"), Some(93_600));
        assert_eq!(parse("30 seconds"), Some(30));
        assert_eq!(parse("soon"), None);
        assert_eq!(parse(""), None);
    }
}
