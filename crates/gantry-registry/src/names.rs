//! Repository names and tags as the Distribution spec defines them.

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most 255
/// characters (what Docker clients accept).
pub fn valid_name(name: &str) -> bool {
    name.len() <= 255 && !name.is_empty() && name.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|x| x.is_ascii_alphanumeric() || b"._-".contains(x))
}

/// The names a repository's project may have, longest first: `a/b/c` → `a/b/c`, `a/b`, `a`.
pub fn project_candidates(name: &str) -> impl Iterator<Item = &str> {
    let mut end = Some(name.len());
    std::iter::from_fn(move || {
        let e = end?;
        let candidate = &name[..e];
        end = candidate.rfind('/');
        Some(candidate)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec() {
        for ok in ["a", "team/app", "a0/b-c/d.e/f_g/h__i/j---k", "x/y/z/w"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "", "A", "team/App", "/a", "a/", "a//b", "a/-b", "a_", "a___b", "a..b", "a/../b", "a b",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(!valid_name(&"a".repeat(256)));
    }

    #[test]
    fn tags_follow_the_spec() {
        for ok in ["latest", "1.4-dev", "_x", "V1.0_rc-2"] {
            assert!(valid_tag(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(!valid_tag(bad), "{bad}");
        }
    }

    #[test]
    fn project_candidates_longest_first() {
        let c: Vec<_> = project_candidates("a/b/c").collect();
        assert_eq!(c, ["a/b/c", "a/b", "a"]);
    }
}
