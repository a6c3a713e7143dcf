//! Human durations as GitLab accepts them in `timeout`, `start_in`, `expire_in` and
//! `auto_stop_in`: `"1h 30m"`, `"3 hours"`, `"90 minutes"`, `"2 days 4h"`, `"1 week"`,
//! `"3600"` (seconds), `"1h30m15s"`.

/// Parses a duration to seconds, or `None` when it is not one.
pub fn parse(s: &str) -> Option<u64> {
    let s = numerize(&s.trim().to_ascii_lowercase());
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
            "y" | "yr" | "yrs" | "year" | "years" => 31_557_600.0,
            _ => return None,
        };
        total += n * mult;
        any = true;
    }
    any.then_some(total.round() as u64)
}

/// Number words to digits, as the `chronic_duration` gem GitLab uses does: `one hour`,
/// `twenty five minutes`.
fn numerize(s: &str) -> String {
    const ONES: &[&str] = &[
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: &[&str] = &[
        "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    let words: Vec<&str> = s.split_whitespace().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        if let Some(t) = TENS.iter().position(|x| !x.is_empty() && *x == w) {
            let mut n = t * 10;
            if let Some(o) = words
                .get(i + 1)
                .and_then(|n2| ONES[1..10].iter().position(|x| x == n2))
            {
                n += o + 1;
                i += 1;
            }
            out.push(n.to_string());
        } else if let Some(o) = ONES.iter().position(|x| *x == w) {
            out.push(o.to_string());
        } else {
            out.push(w.to_string());
        }
        i += 1;
    }
    out.join(" ")
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
        assert_eq!(parse("one hour"), Some(3600));
        assert_eq!(parse("one week"), Some(604_800));
        assert_eq!(parse("twenty five minutes"), Some(1500));
        assert_eq!(parse("2h20min"), Some(8400));
        assert_eq!(parse("3 mins 4 sec"), Some(184));
        assert_eq!(
            parse("47 yrs 6 mos and 4d"),
            Some(47 * 31_557_600 + 6 * 2_592_000 + 4 * 86_400)
        );
        assert_eq!(parse("soon"), None);
        assert_eq!(parse(""), None);
    }
}
