//! Behaviour tests. Many cases come from GitLab's documentation (`doc/ci/jobs/job_rules.md`)
//! and its specs (`spec/lib/gitlab/ci/pipeline/expression/statement_spec.rb`).

use std::collections::HashMap;

use super::eval::{Value, eval};
use super::*;

/// The variables of GitLab's `statement_spec.rb`, plus a few more.
fn spec_vars() -> HashMap<&'static str, &'static str> {
    HashMap::from([
        ("PRESENT_VARIABLE", "my variable"),
        ("PATH_VARIABLE", "a/path/variable/value"),
        ("FULL_PATH_VARIABLE", "/a/full/path/variable/value"),
        ("EMPTY_VARIABLE", ""),
        ("BLANK_VARIABLE", "  \t"),
        ("CI_COMMIT_BRANCH", "main"),
        ("CI_DEFAULT_BRANCH", "main"),
        ("CI_PIPELINE_SOURCE", "merge_request_event"),
        ("CI_COMMIT_MESSAGE", "Fix the build\n\n[skip-tests] please"),
        ("CI_COMMIT_TAG", "v1.22.3"),
        ("PATTERN", "/^ab.*/"),
        ("PATTERN_I", "/^AB/i"),
        ("ONE_CHAR_PATTERN", "/c/"),
        ("BAD_PATTERN", "/ab(/"),
        ("TESTSTRING", "abcde"),
        ("OTHERSTRING", "fghij"),
    ])
}

fn eval_with(src: &str, vars: &HashMap<&str, &str>) -> bool {
    let expr = parse(src).unwrap_or_else(|e| panic!("`{src}` does not parse: {e}"));
    expr.evaluate(&|name| vars.get(name).map(|v| v.to_string()))
}

fn t(src: &str) -> bool {
    eval_with(src, &spec_vars())
}

/// The Ruby value of an expression, rendered like `inspect`: `nil`, `true`, `"str"`, `/re/`.
fn ruby(src: &str) -> String {
    let expr = parse(src).unwrap_or_else(|e| panic!("`{src}` does not parse: {e}"));
    let vars = spec_vars();
    let lookup = |name: &str| vars.get(name).map(|v| v.to_string());
    match eval(&expr.root, &lookup) {
        Ok(Value::Nil) => "nil".into(),
        Ok(Value::Bool(b)) => b.to_string(),
        Ok(Value::Str(s)) => format!("{s:?}"),
        Ok(Value::Regex(p)) => p.raw().to_string(),
        Err(_) => "crash".into(),
    }
}

fn err(src: &str) -> ExprError {
    match parse(src) {
        Ok(expr) => panic!("`{src}` parsed as {expr:?}"),
        Err(e) => e,
    }
}

// ---- Documented examples -----------------------------------------------------------------

#[test]
fn doc_branch_equals_string() {
    assert!(t(r#"$CI_COMMIT_BRANCH == "main""#));
    assert!(!t(r#"$CI_COMMIT_BRANCH == "develop""#));
    assert!(t(r#"$CI_COMMIT_BRANCH != "develop""#));
}

#[test]
fn doc_single_and_double_quotes_are_equivalent() {
    assert!(t("$CI_COMMIT_BRANCH == 'main'"));
    assert_eq!(parse("$A == 'x'").unwrap(), parse("$A == \"x\"").unwrap());
}

#[test]
fn doc_pipeline_source() {
    assert!(t(r#"$CI_PIPELINE_SOURCE == "merge_request_event""#));
    assert!(!t(r#"$CI_PIPELINE_SOURCE == "push""#));
}

#[test]
fn doc_compare_two_variables() {
    assert!(t("$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"));
    assert!(!t("$CI_COMMIT_BRANCH != $CI_DEFAULT_BRANCH"));
    assert!(!t("$CI_COMMIT_BRANCH == $PRESENT_VARIABLE"));
}

#[test]
fn doc_commit_message_regex() {
    assert!(t("$CI_COMMIT_MESSAGE =~ /skip-tests/"));
    assert!(!t("$CI_COMMIT_MESSAGE !~ /skip-tests/"));
    assert!(!t("$CI_COMMIT_MESSAGE =~ /skip-deploy/"));
}

#[test]
fn doc_tag_version_regex() {
    assert!(t(r"$CI_COMMIT_TAG =~ /^v\d+\.\d+/"));
    assert!(!t(r"$CI_COMMIT_TAG =~ /^release-\d+/"));
    let vars = HashMap::from([("CI_COMMIT_TAG", "v1x2")]);
    assert!(!eval_with(r"$CI_COMMIT_TAG =~ /^v\d+\.\d+/", &vars));
}

#[test]
fn doc_case_insensitive_flag() {
    let vars = HashMap::from([("CI_COMMIT_BRANCH", "MAIN")]);
    assert!(eval_with("$CI_COMMIT_BRANCH =~ /main/i", &vars));
    assert!(!eval_with("$CI_COMMIT_BRANCH =~ /main/", &vars));
}

#[test]
fn doc_regex_is_unanchored_unless_anchored() {
    let vars = HashMap::from([("BRANCH", "severe-issues")]);
    assert!(eval_with("$BRANCH =~ /issue/", &vars));
    assert!(!eval_with("$BRANCH =~ /^issue-.*$/", &vars));
    assert!(!eval_with("$BRANCH =~ /^issue-/", &vars));
}

#[test]
fn doc_null_checks_defined() {
    assert!(t("$UNDEFINED == null"));
    assert!(!t("$UNDEFINED != null"));
    assert!(t("$EMPTY_VARIABLE != null"));
    assert!(!t("$EMPTY_VARIABLE == null"));
}

#[test]
fn doc_empty_string_checks_defined_but_empty() {
    assert!(t(r#"$EMPTY_VARIABLE == """#));
    assert!(!t(r#"$EMPTY_VARIABLE != """#));
    // An undefined variable is nil, which is not "".
    assert!(!t(r#"$UNDEFINED == """#));
    assert!(t(r#"$UNDEFINED != """#));
}

#[test]
fn doc_lone_variable_means_defined_and_not_empty() {
    assert!(t("$PRESENT_VARIABLE"));
    assert!(!t("$EMPTY_VARIABLE"));
    assert!(!t("$UNDEFINED"));
}

#[test]
fn doc_variable_held_pattern() {
    // regex-job1 / regex-job2 of the documentation.
    assert!(t("$TESTSTRING =~ $PATTERN"));
    assert!(!t("$OTHERSTRING =~ $PATTERN"));
    assert!(!t("$TESTSTRING !~ $PATTERN"));
    assert!(t("$OTHERSTRING !~ $PATTERN"));
}

#[test]
fn doc_variable_held_pattern_with_flags() {
    assert!(t("$TESTSTRING =~ $PATTERN_I"));
    let vars = HashMap::from([("S", "a/b"), ("P", r"/^a\/b$/")]);
    assert!(eval_with("$S =~ $P", &vars));
}

#[test]
fn doc_variables_inside_patterns_are_not_expanded() {
    let vars = HashMap::from([("CI_JOB_NAME", "regex-job1"), ("string1", "regex-job1")]);
    assert!(!eval_with("$CI_JOB_NAME =~ /$string1/", &vars));
    let vars = HashMap::from([("NAME", "$string1")]);
    assert!(eval_with(r"$NAME =~ /\$string1/", &vars));
    // Nor inside strings.
    let vars = HashMap::from([("A", "x"), ("B", "x")]);
    assert!(!eval_with(r#"$A == "$B""#, &vars));
}

#[test]
fn doc_join_with_and_or() {
    let vars = HashMap::from([("VARIABLE1", "content-1"), ("VARIABLE2", "something")]);
    assert!(eval_with(
        r#"$VARIABLE1 =~ /^content.*/ && $VARIABLE2 == "something""#,
        &vars
    ));
    assert!(!eval_with(
        r"$VARIABLE1 =~ /^content.*/ && $VARIABLE2 =~ /thing$/ && $V3",
        &vars
    ));
    // `&&` binds tighter: `a || (b && c)`.
    assert!(eval_with(
        r"$VARIABLE1 =~ /^content.*/ || $VARIABLE2 =~ /nope$/ && $V3",
        &vars
    ));
}

#[test]
fn doc_parenthesized_complex_rule() {
    let src = concat!(
        r#"($CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH || $CI_COMMIT_BRANCH == "develop")"#,
        " && $MY_VARIABLE"
    );
    let mut vars = spec_vars();
    assert!(!eval_with(src, &vars));
    vars.insert("MY_VARIABLE", "1");
    assert!(eval_with(src, &vars));
    vars.insert("CI_COMMIT_BRANCH", "develop");
    assert!(eval_with(src, &vars));
    vars.insert("CI_COMMIT_BRANCH", "feature");
    assert!(!eval_with(src, &vars));
}

#[test]
fn doc_nested_parentheses() {
    let src = concat!(
        r#"$CI_COMMIT_BRANCH == "my-branch" || "#,
        r#"(($VARIABLE1 == "thing" || $VARIABLE2 == "thing") && $VARIABLE3)"#
    );
    let vars = HashMap::from([("VARIABLE2", "thing"), ("VARIABLE3", "y")]);
    assert!(eval_with(src, &vars));
    let vars = HashMap::from([("VARIABLE2", "thing")]);
    assert!(!eval_with(src, &vars));
}

#[test]
fn doc_and_with_grouped_or() {
    let src = "$VAR1 && ($VAR2 || $VAR3)";
    let with = |pairs: &[(&'static str, &'static str)]| {
        eval_with(src, &HashMap::from_iter(pairs.iter().copied()))
    };
    assert!(with(&[("VAR1", "a"), ("VAR3", "c")]));
    assert!(with(&[("VAR1", "a"), ("VAR2", "b")]));
    assert!(!with(&[("VAR1", "a")]));
    assert!(!with(&[("VAR2", "b"), ("VAR3", "c")]));
}

#[test]
fn doc_substring_fallback_for_non_regex_right_side() {
    // "`"23" =~ "1234"` evaluates to true, which is the opposite of `"23" =~ /1234/`".
    assert!(t(r#""23" =~ "1234""#));
    assert!(!t(r#""23" =~ /1234/"#));
    assert!(!t(r#""1234" =~ "23""#));
    assert!(t(r#""1234" !~ "23""#));
}

// ---- GitLab's statement_spec.rb ----------------------------------------------------------

#[test]
fn spec_equality_table() {
    for (src, want) in [
        (r#"$PRESENT_VARIABLE == "my variable""#, true),
        (r#""my variable" == $PRESENT_VARIABLE"#, true),
        ("$PRESENT_VARIABLE == null", false),
        ("$EMPTY_VARIABLE == null", false),
        (r#""" == $EMPTY_VARIABLE"#, true),
        ("$UNDEFINED_VARIABLE == null", true),
        ("null == $UNDEFINED_VARIABLE", true),
        (r#"$PRESENT_VARIABLE != "my variable""#, false),
        (r#""my variable" != $PRESENT_VARIABLE"#, false),
        ("$PRESENT_VARIABLE != null", true),
        ("$EMPTY_VARIABLE != null", true),
        (r#""" != $EMPTY_VARIABLE"#, false),
        ("$UNDEFINED_VARIABLE != null", false),
        ("null != $UNDEFINED_VARIABLE", false),
    ] {
        assert_eq!(t(src), want, "{src}");
    }
}

#[test]
fn spec_match_table() {
    for (src, want) in [
        ("$PRESENT_VARIABLE =~ /var.*e$/", true),
        (r"$PRESENT_VARIABLE =~ /va\r.*e$/", false),
        (r"$PRESENT_VARIABLE =~ /va\/r.*e$/", false),
        ("$PRESENT_VARIABLE =~ /^var.*/", false),
        ("$EMPTY_VARIABLE =~ /var.*/", false),
        ("$UNDEFINED_VARIABLE =~ /var.*/", false),
        ("$PRESENT_VARIABLE =~ /VAR.*/i", true),
        (r"$PATH_VARIABLE =~ /path\/variable/", true),
        (
            r"$FULL_PATH_VARIABLE =~ /^\/a\/full\/path\/variable\/value$/",
            true,
        ),
        (r"$FULL_PATH_VARIABLE =~ /\/path\/variable\/value$/", true),
        ("$PRESENT_VARIABLE !~ /var.*e$/", false),
        ("$PRESENT_VARIABLE !~ /^var.*/", true),
        (r"$PRESENT_VARIABLE !~ /^v\ar.*/", true),
        (r"$PRESENT_VARIABLE !~ /^v\/ar.*/", true),
        ("$EMPTY_VARIABLE !~ /var.*/", true),
        ("$UNDEFINED_VARIABLE !~ /var.*/", true),
        ("$PRESENT_VARIABLE !~ /VAR.*/i", false),
    ] {
        assert_eq!(t(src), want, "{src}");
    }
}

#[test]
fn spec_and_returns_ruby_operands() {
    for (src, want) in [
        (r#"$PRESENT_VARIABLE && "string""#, r#""string""#),
        ("$PRESENT_VARIABLE && $PRESENT_VARIABLE", r#""my variable""#),
        ("$PRESENT_VARIABLE && $EMPTY_VARIABLE", r#""""#),
        ("$PRESENT_VARIABLE && null", "nil"),
        (r#""string" && $PRESENT_VARIABLE"#, r#""my variable""#),
        ("$EMPTY_VARIABLE && $PRESENT_VARIABLE", r#""my variable""#),
        ("null && $PRESENT_VARIABLE", "nil"),
        (r#"$EMPTY_VARIABLE && "string""#, r#""string""#),
        ("$EMPTY_VARIABLE && $EMPTY_VARIABLE", r#""""#),
        (r#""string" && $EMPTY_VARIABLE"#, r#""""#),
        (r#""string" && null"#, "nil"),
        (r#"null && "string""#, "nil"),
        (r#""string" && "string""#, r#""string""#),
        ("null && null", "nil"),
        ("$PRESENT_VARIABLE && $UNDEFINED_VARIABLE", "nil"),
        ("$UNDEFINED_VARIABLE && $EMPTY_VARIABLE", "nil"),
        ("$UNDEFINED_VARIABLE && $PRESENT_VARIABLE", "nil"),
    ] {
        assert_eq!(ruby(src), want, "{src}");
    }
}

#[test]
fn spec_or_returns_ruby_operands() {
    for (src, want) in [
        (
            "$PRESENT_VARIABLE || $UNDEFINED_VARIABLE",
            r#""my variable""#,
        ),
        (
            "$UNDEFINED_VARIABLE || $PRESENT_VARIABLE",
            r#""my variable""#,
        ),
        ("$UNDEFINED_VARIABLE == null || $PRESENT_VARIABLE", "true"),
        (
            "$PRESENT_VARIABLE || $UNDEFINED_VARIABLE == null",
            r#""my variable""#,
        ),
        (
            r#"$PRESENT_VARIABLE && null || $EMPTY_VARIABLE == """#,
            "true",
        ),
        (r#"$EMPTY_VARIABLE == "" || $PRESENT_VARIABLE"#, "true"),
        (
            r#"$PRESENT_VARIABLE != "nope" || $EMPTY_VARIABLE == """#,
            "true",
        ),
    ] {
        assert_eq!(ruby(src), want, "{src}");
    }
}

#[test]
fn spec_combined_matches() {
    let full = r"$FULL_PATH_VARIABLE =~ /^\/a\/full\/path\/variable\/value$/";
    let bad_full = r"$FULL_PATH_VARIABLE =~ /^\/a\/bad\/path\/variable\/value$/";
    let path = r"$PATH_VARIABLE =~ /path\/variable/";
    let bad_path = r"$PATH_VARIABLE =~ /bad\/path\/variable/";
    for (a, b, and, or) in [
        (full, path, true, true),
        (bad_full, path, false, true),
        (full, bad_path, false, true),
        (bad_full, bad_path, false, false),
    ] {
        assert_eq!(t(&format!("{a} && {b}")), and, "{a} && {b}");
        assert_eq!(t(&format!("{a} || {b}")), or, "{a} || {b}");
    }
    assert!(!t(
        "$PRESENT_VARIABLE =~ /my var/ && $EMPTY_VARIABLE =~ /nope/"
    ));
    assert!(t(
        "$PRESENT_VARIABLE =~ /my var/ || $EMPTY_VARIABLE =~ /nope/"
    ));
}

#[test]
fn spec_parentheses_table() {
    for (src, want) in [
        ("($PRESENT_VARIABLE)", r#""my variable""#),
        ("(($PRESENT_VARIABLE))", r#""my variable""#),
        (
            r#"(($PRESENT_VARIABLE && null) || $EMPTY_VARIABLE == "")"#,
            "true",
        ),
        (
            r#"($PRESENT_VARIABLE) && (null || $EMPTY_VARIABLE == "")"#,
            "true",
        ),
        (r#"("string" || "test") == "string""#, "true"),
        (r#"(null || ("test" == "string"))"#, "false"),
        (r#"("string" == ("test" && "string"))"#, "true"),
        (r#"("string" == ("test" || "string"))"#, "false"),
        (r#"("string" == "test" || "string")"#, r#""string""#),
        (
            r#"("string" == ("string" || (("1" == "1") && ("2" == "3"))))"#,
            "true",
        ),
    ] {
        assert_eq!(ruby(src), want, "{src}");
    }
}

#[test]
fn spec_truthful_table() {
    for (src, want) in [
        (r#"$PRESENT_VARIABLE == "my variable""#, true),
        ("$PRESENT_VARIABLE == 'no match'", false),
        ("$UNDEFINED_VARIABLE == null", true),
        ("$PRESENT_VARIABLE", true),
        ("$UNDEFINED_VARIABLE", false),
        ("$EMPTY_VARIABLE", false),
        ("$PRESENT_VARIABLE =~ /var.*/", true),
        ("$UNDEFINED_VARIABLE =~ /var.*/", false),
        ("$PRESENT_VARIABLE !~ /var.*/", false),
        ("$UNDEFINED_VARIABLE !~ /var.*/", true),
    ] {
        assert_eq!(t(src), want, "{src}");
    }
    // `'$INVALID = 1'` is not truthful in GitLab because it does not parse.
    assert!(parse("$INVALID = 1").is_err());
}

// ---- Truthiness quirks ----------------------------------------------------------------------

#[test]
fn empty_or_set_is_false_like_gitlab() {
    // Ruby: "" || "x" => "" (a string is truthy), and "" is not present?.
    assert!(!t("$EMPTY_VARIABLE || $PRESENT_VARIABLE"));
    assert_eq!(ruby("$EMPTY_VARIABLE || $PRESENT_VARIABLE"), r#""""#);
    // With a defined-but-empty description-only variable, as in gitlab-org/gitlab#358775.
    assert!(!t(
        r#"$EMPTY_VARIABLE || $PRESENT_VARIABLE == "my variable""#
    ));
    assert!(t(
        r#"$PRESENT_VARIABLE == "my variable" || $EMPTY_VARIABLE"#
    ));
}

#[test]
fn empty_and_set_is_true_like_gitlab() {
    assert!(t("$EMPTY_VARIABLE && $PRESENT_VARIABLE"));
    assert!(!t("$PRESENT_VARIABLE && $EMPTY_VARIABLE"));
}

#[test]
fn whitespace_only_values_are_blank() {
    assert!(!t("$BLANK_VARIABLE"));
    assert!(!t(r#""   ""#));
    assert!(t(r#"$BLANK_VARIABLE == "  	""#));
    assert!(t(r#"$BLANK_VARIABLE != null"#));
    let vars = HashMap::from([("NBSP", "\u{a0}"), ("DOT", " . ")]);
    assert!(!eval_with("$NBSP", &vars));
    assert!(eval_with("$DOT", &vars));
}

#[test]
fn lone_literals() {
    assert!(t(r#""main""#));
    assert!(!t(r#""""#));
    assert!(!t("null"));
    assert!(t("/foo/"));
    assert!(t("/^$/"));
    assert_eq!(ruby("/ab/i"), "/ab/i");
}

#[test]
fn comparison_results_are_booleans() {
    assert_eq!(ruby(r#"$PRESENT_VARIABLE == "my variable""#), "true");
    assert_eq!(ruby("$PRESENT_VARIABLE =~ /nothing/"), "false");
    assert_eq!(ruby("$PRESENT_VARIABLE !~ /nothing/"), "true");
}

#[test]
fn chained_comparisons_are_left_associative() {
    // (("a" == "a") == "a") => (true == "a") => false
    assert!(!t(r#""a" == "a" == "a""#));
    // ("a" == ("b" == "c")) => ("a" == false) => false; (("a" == "b") == ("c" == "d")) => true
    assert!(t(r#""a" == "b" == ("c" == "d")"#));
    assert_eq!(
        parse("$A == $B == $C").unwrap().to_string(),
        "$A == $B == $C"
    );
}

#[test]
fn and_binds_tighter_than_or() {
    let all_unset = HashMap::new();
    // `$A || $B && $C` is `$A || ($B && $C)`.
    assert!(eval_with("$A || $B && $C", &HashMap::from([("A", "1")])));
    assert!(!eval_with("($A || $B) && $C", &HashMap::from([("A", "1")])));
    assert!(!eval_with("$A || $B && $C", &all_unset));
    assert_eq!(
        parse("$A || $B && $C").unwrap(),
        parse("$A || ($B && $C)").unwrap()
    );
    assert_eq!(
        parse("$A && $B || $C && $D").unwrap(),
        parse("($A && $B) || ($C && $D)").unwrap()
    );
}

#[test]
fn short_circuit_skips_crashes() {
    // The right side would crash (`"a".source`), but it is never evaluated.
    assert!(t(r#"$PRESENT_VARIABLE || /a+/ == "a""#));
    assert!(!t(r#"null && /a+/ == "a""#));
    assert!(!t(r#"$PRESENT_VARIABLE && /a+/ == "a""#));
}

// ---- Regex matching ---------------------------------------------------------------------------

#[test]
fn undefined_left_side_is_searched_as_empty_string() {
    assert!(t("$UNDEFINED =~ /^$/"));
    // gitlab-org/gitlab#31542: `/^v*/` matches an empty tag.
    assert!(t("$UNDEFINED =~ /^v*/"));
    assert!(!t("$UNDEFINED !~ /^v*/"));
    assert!(!t("$UNDEFINED =~ /v+/"));
    assert!(t("$UNDEFINED !~ /v+/"));
}

#[test]
fn null_or_undefined_right_side() {
    assert!(!t("$PRESENT_VARIABLE =~ null"));
    assert!(t("$PRESENT_VARIABLE !~ null"));
    assert!(!t("$PRESENT_VARIABLE =~ $UNDEFINED"));
    assert!(t("$PRESENT_VARIABLE !~ $UNDEFINED"));
    assert!(!t(r#"$PRESENT_VARIABLE =~ ("a" == "b")"#));
    assert!(t(r#"$PRESENT_VARIABLE !~ ("a" == "b")"#));
}

#[test]
fn string_literal_that_looks_like_a_regex_is_a_regex() {
    assert!(t(r#"$TESTSTRING =~ "/^ab/""#));
    assert!(!t(r#"$TESTSTRING =~ "/^b/""#));
}

#[test]
fn variable_with_one_char_pattern_works() {
    // Single-character literals cannot be written, but a variable may hold one.
    let vars = HashMap::from([("S", "abc"), ("P", "/c/")]);
    assert!(eval_with("$S =~ $P", &vars));
    assert!(t("$TESTSTRING =~ $ONE_CHAR_PATTERN"));
}

#[test]
fn variable_with_invalid_pattern_falls_back_to_substring() {
    // `/ab(/` is not a valid regex, so GitLab looks for the left side inside "/ab(/".
    assert!(!t("$TESTSTRING =~ $BAD_PATTERN"));
    let vars = HashMap::from([("S", "ab("), ("P", "/ab(/")]);
    assert!(eval_with("$S =~ $P", &vars));
    let vars = HashMap::from([("S", "main"), ("P", "main-and-more")]);
    assert!(eval_with("$S =~ $P", &vars));
    assert!(!eval_with("$S !~ $P", &vars));
    // The empty string is a substring of anything.
    assert!(t("$UNDEFINED =~ $TESTSTRING"));
    assert!(t("$EMPTY_VARIABLE =~ $EMPTY_VARIABLE"));
}

#[test]
fn multiline_values_and_flags() {
    let vars = HashMap::from([("MSG", "first line\nsecond line")]);
    assert!(!eval_with("$MSG =~ /^second/", &vars));
    assert!(eval_with("$MSG =~ /^second/m", &vars));
    assert!(!eval_with("$MSG =~ /line.second/", &vars));
    assert!(eval_with("$MSG =~ /line.second/s", &vars));
    assert!(eval_with("$MSG =~ /LINE.SECOND/si", &vars));
}

#[test]
fn variable_pattern_uses_ruby_line_anchors() {
    // GitLab reads `/pattern/flags` with `^...$` line anchors: any one line of the value may be
    // the pattern.
    let vars = HashMap::from([("S", "xbary"), ("P", "not a pattern\n/bar/")]);
    assert!(eval_with("$S =~ $P", &vars));
    let vars = HashMap::from([("S", "xbary"), ("P", "/ba\nr/")]);
    assert!(!eval_with("$S =~ $P", &vars));
}

#[test]
fn ungreedy_flag_is_accepted() {
    assert!(t("$TESTSTRING =~ /a.+e/U"));
}

#[test]
fn regex_literal_slashes() {
    let vars = HashMap::from([("URL", "https://example.com/x")]);
    assert!(eval_with(r"$URL =~ /^https:\/\//", &vars));
    assert!(eval_with(r"$URL =~ /\//", &vars));
    // `/ab//` is one literal whose body is `ab/`.
    let vars = HashMap::from([("S", "xab/y")]);
    assert!(eval_with("$S =~ /ab//", &vars));
}

#[test]
fn backslash_escapes_other_than_slash_are_regex_escapes() {
    let vars = HashMap::from([("S", "price: $5")]);
    assert!(eval_with(r"$S =~ /\$\d/", &vars));
    let vars = HashMap::from([("S", "a.b")]);
    assert!(eval_with(r"$S =~ /^a\.b$/", &vars));
    let vars = HashMap::from([("S", "axb")]);
    assert!(!eval_with(r"$S =~ /^a\.b$/", &vars));
}

#[test]
fn re2_perl_classes_are_ascii() {
    let vars = HashMap::from([("TAG", "v١.٢")]); // Arabic-Indic digits
    assert!(!eval_with(r"$TAG =~ /^v\d+\.\d+/", &vars));
    let vars = HashMap::from([("REF", "user@host")]);
    assert!(eval_with(r"$REF =~ /\x40/", &vars));
}

#[test]
fn regex_equality_compares_sources() {
    assert!(t("/ab/i == /ab/i"));
    assert!(t("/ab/i == /(?i)ab/"));
    assert!(!t("/ab/ == /ab/i"));
    assert!(t("/ab/ != /ab/i"));
}

#[test]
fn ruby_crashes_make_the_expression_false() {
    // `UntrustedRegexp#==` calls `other.source`.
    assert_eq!(ruby(r#"/ab/ == "ab""#), "crash");
    assert!(!t(r#"/ab/ == "ab""#));
    assert!(!t(r#"/ab/ != "ab""#));
    assert!(!t("/ab/ == null"));
    // A string compared with a regex is simply unequal.
    assert!(!t(r#""ab" == /ab/"#));
    assert!(t(r#""ab" != /ab/"#));
    // `=~` against `true` calls `true.gsub`.
    assert_eq!(ruby(r#"$TESTSTRING =~ ("a" == "a")"#), "crash");
    assert!(!t(r#"$TESTSTRING !~ ("a" == "a")"#));
}

#[test]
fn boolean_left_side_matches_as_text() {
    assert!(t(r#"("a" == "a") =~ /^true$/"#));
    assert!(t(r#"("a" == "b") =~ /^false$/"#));
}

// ---- Parsing, errors, rendering --------------------------------------------------------------

#[test]
fn whitespace_is_insignificant() {
    let a = parse("$A==\"x\"&&($B||$C)").unwrap();
    let b = parse(" \t$A == \"x\"\n&& ( $B || $C ) \r\n").unwrap();
    assert_eq!(a, b);
}

#[test]
fn display_normalizes() {
    for (src, want) in [
        (r#"$A=="x""#, r#"$A == "x""#),
        ("$A=='x'", r#"$A == "x""#),
        (r#"$A == 'say "hi"'"#, r#"$A == 'say "hi"'"#),
        ("(($A))", "$A"),
        ("($A && $B) || $C", "$A && $B || $C"),
        ("$A && ($B || $C)", "$A && ($B || $C)"),
        ("$A || ($B || $C)", "$A || ($B || $C)"),
        ("($A || $B) || $C", "$A || $B || $C"),
        ("($A == $B) == $C", "$A == $B == $C"),
        ("$A == ($B == $C)", "$A == ($B == $C)"),
        ("$A == ($B && $C)", "$A == ($B && $C)"),
        (r"$A =~ /a\/b/i", r"$A =~ /a\/b/i"),
        ("null!=$A", "null != $A"),
    ] {
        assert_eq!(parse(src).unwrap().to_string(), want, "{src}");
    }
}

#[test]
fn display_round_trips() {
    for src in [
        r#"$CI_COMMIT_BRANCH == "main" && ($A || $B =~ /x+/i) || null != $C"#,
        r#"("a" == ("b" || ("c" && "d"))) != $E"#,
        r"$A !~ /^v\d+\.\d+\/x$/ms",
        "'it\"s' == $X",
    ] {
        let expr = parse(src).unwrap();
        assert_eq!(parse(&expr.to_string()).unwrap(), expr, "{src}");
    }
}

#[test]
fn variables_in_order_deduplicated() {
    let expr =
        parse(r#"$B == "x" || ($A && $B =~ /$C/) || $CI_COMMIT_BRANCH != $A && $D"#).unwrap();
    assert_eq!(expr.variables(), ["B", "A", "CI_COMMIT_BRANCH", "D"]);
    assert!(parse(r#""x" == null"#).unwrap().variables().is_empty());
}

#[test]
fn variable_names_allow_digits_and_underscores() {
    let expr = parse("$_1 && $9LIVES && $a_b_C").unwrap();
    assert_eq!(expr.variables(), ["_1", "9LIVES", "a_b_C"]);
    // `-` ends a name.
    assert!(parse("$FOO-BAR").is_err());
}

#[test]
fn from_str_matches_parse() {
    let expr: Expr = "$A".parse().unwrap();
    assert_eq!(expr, parse("$A").unwrap());
    assert!("$A ==".parse::<Expr>().is_err());
}

#[test]
fn error_empty_expression() {
    let e = err("");
    assert_eq!(e.message, "empty expression");
    let e = err("   ");
    assert_eq!((e.offset, e.len), (0, 3));
}

#[test]
fn error_trailing_operator() {
    let e = err("$A &&");
    assert_eq!(e.message, "unexpected token `&&` at end of expression");
    assert_eq!((e.offset, e.len), (3, 2));
    let e = err("$VAR ==");
    assert_eq!(e.message, "unexpected token `==` at end of expression");
}

#[test]
fn error_leading_operator() {
    let e = err(r#"== "123""#);
    assert_eq!(e.message, "an expression cannot start with `==`");
    assert_eq!((e.offset, e.len), (0, 2));
    assert!(e.help.is_some());
}

#[test]
fn error_two_operators_in_a_row() {
    let e = err("$A == && $B");
    assert_eq!(e.message, "expected a value after `==`, found `&&`");
    assert_eq!((e.offset, e.len), (6, 2));
}

#[test]
fn error_missing_operator_between_values() {
    let e = err(r#"$VAR "text""#);
    assert_eq!(
        e.message,
        "unexpected string `\"text\"`: expected an operator"
    );
    assert_eq!((e.offset, e.len), (5, 6));
    let e = err("$A $B");
    assert_eq!((e.offset, e.len), (3, 2));
    // GitLab's shunting-yard accepts these by accident; they are rejected here.
    assert!(parse("== $A $B").is_err());
    assert!(parse("$A $B ==").is_err());
}

#[test]
fn error_single_equals() {
    let e = err(r#"$A = "x""#);
    assert_eq!(e.message, "unknown operator `=`: did you mean `==`?");
    assert_eq!((e.offset, e.len), (3, 1));
    assert_eq!(
        err("$A & $B").message,
        "unknown operator `&`: did you mean `&&`?"
    );
    assert_eq!(
        err("$A | $B").message,
        "unknown operator `|`: did you mean `||`?"
    );
    assert_eq!(
        err("!$A").message,
        "unknown operator `!`: did you mean `!=`?"
    );
    assert!(err("$A ~ /ab/").message.contains("`=~`"));
    assert!(err("$A > $B").message.contains("`>`"));
}

#[test]
fn error_unterminated_string() {
    let e = err(r#"$A == "main"#);
    assert_eq!(e.message, "unterminated string literal");
    assert_eq!((e.offset, e.len), (6, 5));
    assert_eq!(e.help.as_deref(), Some("close it with `\"`"));
    // No escapes: `'it\'` is a whole string, then `s` is a stray word.
    let e = err(r"$A == 'it\'s'");
    assert_eq!(e.message, "unknown word `s`");
    assert!(e.help.unwrap().contains("no escape sequences"));
    let e = err(r#"$A == "say \"hi\"" && $B"#);
    assert_eq!(e.message, "unknown word `hi`");
    let e = err(r#"$A == "a\" b""#);
    assert_eq!(e.message, "unknown word `b`");
    let e = err(r#"$A == "C:\" ""#);
    assert_eq!(e.message, "unterminated string literal");
    assert!(e.help.unwrap().contains("no escape sequences"));
}

#[test]
fn error_brace_variable_syntax() {
    let e = err(r#"${CI_COMMIT_BRANCH} == "main""#);
    assert_eq!(
        e.message,
        "`${CI_COMMIT_BRANCH}` is not allowed in an expression"
    );
    assert_eq!((e.offset, e.len), (0, 19));
    assert_eq!(e.help.as_deref(), Some("write `$CI_COMMIT_BRANCH` instead"));
    let e = err(r#""${ENVIRONMENT}" == "production" && ${X"#);
    assert_eq!(e.offset, 36);
}

#[test]
fn error_percent_variable_syntax() {
    let e = err(r#"%CI_COMMIT_BRANCH% == "main""#);
    assert_eq!((e.offset, e.len), (0, 18));
    assert_eq!(e.help.as_deref(), Some("write `$CI_COMMIT_BRANCH` instead"));
}

#[test]
fn error_inputs_interpolation_left_in() {
    let e = err("$[[ inputs.branch ]] == $CI_COMMIT_REF_NAME");
    assert_eq!((e.offset, e.len), (0, 20));
    assert!(e.message.contains("inputs"));
}

#[test]
fn error_bare_words() {
    let e = err("$CI_COMMIT_BRANCH == main");
    assert_eq!(e.message, "unknown word `main`");
    assert_eq!((e.offset, e.len), (21, 4));
    assert!(e.help.unwrap().contains("\"main\""));
    assert!(err("$A and $B").help.unwrap().contains("&&"));
    assert!(err("$A or $B").help.unwrap().contains("||"));
    assert!(err("$A == NULL").help.unwrap().contains("lowercase"));
    assert!(err("$A == true").help.unwrap().contains("\"true\""));
    assert!(err("12345").help.unwrap().contains("quote"));
}

#[test]
fn error_parentheses() {
    let e = err("($A == $B");
    assert_eq!(e.message, "unclosed `(`");
    assert_eq!((e.offset, e.len), (0, 1));
    let e = err("$A == $B)");
    assert_eq!(e.message, "unmatched `)`");
    assert_eq!((e.offset, e.len), (8, 1));
    assert_eq!(err("()").message, "empty parentheses `()`");
    assert_eq!(err("$A == ()").message, "empty parentheses `()`");
    assert_eq!(
        err("$A == )").message,
        "expected a value after `==`, found `)`"
    );
    assert_eq!(err("$A == (").message, "unclosed `(`");
    for src in [
        "$VAR == (",
        r#"$VAR2 == ("aa""#,
        r#"$VAR2 == ("aa"))"#,
        r#"$VAR2 == "aa")"#,
        r#"(($VAR2 == "aa")"#,
        r#"($VAR2 == "aa"))"#,
        "($A $B)",
    ] {
        assert!(parse(src).is_err(), "{src}");
    }
}

#[test]
fn error_regex_literals() {
    let e = err("$A =~ /a/");
    assert_eq!(
        e.message,
        "single-character regex literal `/a/` is not supported"
    );
    assert_eq!((e.offset, e.len), (6, 3));
    assert!(err("$A =~ /./").message.contains("single-character"));
    assert!(err("$A =~ //").message.contains("empty regex"));
    let e = err("$A =~ /abc");
    assert_eq!(e.message, "unterminated regex literal");
    assert_eq!((e.offset, e.len), (6, 4));
    let e = err("$A =~ /ab/x");
    assert_eq!(e.message, "unknown regex flag(s) `x`");
    assert_eq!((e.offset, e.len), (10, 1));
    assert!(err(r"$A =~ /ab\\/").message.contains("backslash"));
}

#[test]
fn error_invalid_regex_literal() {
    let e = err("$A =~ / some ( thin/i");
    assert!(
        e.message
            .starts_with("invalid regular expression `/ some ( thin/i`"),
        "{e}"
    );
    assert_eq!((e.offset, e.len), (6, 15));
    assert!(e.help.unwrap().contains("RE2"));
    assert!(parse("$A =~ /a{1001}/").is_err());
    assert!(parse("$A =~ /(?=x)y/").is_err()); // no lookaround in RE2
}

#[test]
fn error_offsets_are_bytes() {
    let e = err(r#"$A == "é" &&"#);
    assert_eq!((e.offset, e.len), (11, 2));
    let e = err("$A == é");
    assert_eq!((e.offset, e.len), (6, 2));
    assert_eq!(e.message, "unexpected character `é`");
}

#[test]
fn error_display_and_render() {
    let e = err(r#"$A = "x""#);
    assert_eq!(
        e.to_string(),
        "unknown operator `=`: did you mean `==`? (at byte 3); \
         help: `==` compares two values; `=~` matches a regex"
    );
    assert_eq!(
        e.render(r#"$A = "x""#),
        "$A = \"x\"\n   ^ unknown operator `=`: did you mean `==`?\n\
         help: `==` compares two values; `=~` matches a regex"
    );
    let src = "$A &&\n  $B ==";
    let e = err(src);
    assert_eq!(
        e.render(src),
        "  $B ==\n     ^^ unexpected token `==` at end of expression\n\
         help: `==` needs a value on its right"
    );
    // A stale error against another string does not panic.
    let _ = e.render("é");
    let _ = e.render("");
    let boxed: Box<dyn std::error::Error> = Box::new(e);
    assert!(boxed.to_string().contains("at byte"));
}

#[test]
fn token_limit_matches_gitlab() {
    let ok = vec!["$A"; 50].join(" && ");
    assert_eq!(ok.split(' ').count(), MAX_TOKENS);
    assert!(parse(&ok).is_ok());
    let too_many = format!("{ok} && $B");
    let e = err(&too_many);
    assert!(e.message.contains("too many tokens"), "{e}");
    assert_eq!(e.offset, ok.len() + 1);
}

#[test]
fn deep_nesting_is_rejected_without_overflow() {
    let ok = format!("{}$A{}", "(".repeat(48), ")".repeat(48));
    assert!(parse(&ok).is_ok());
    let deep = format!("{}$A{}", "(".repeat(100_000), ")".repeat(100_000));
    assert!(parse(&deep).is_err());
    // The nesting limit itself, with the token limit lifted.
    let at_limit = format!("{}$A{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING));
    assert!(parser::parse_node(&at_limit, usize::MAX).is_ok());
    let over = format!(
        "{}$A{}",
        "(".repeat(MAX_NESTING + 1),
        ")".repeat(MAX_NESTING + 1)
    );
    let e = parser::parse_node(&over, usize::MAX).unwrap_err();
    assert!(e.message.contains("nested too deeply"));
    assert_eq!(e.offset, MAX_NESTING);
    let huge = format!("{}$A", "(".repeat(1_000_000));
    assert!(parser::parse_node(&huge, usize::MAX).is_err());
}

#[test]
fn clone_and_eq() {
    let a = parse(r"$A =~ /x\/y/i && $B").unwrap();
    assert_eq!(a.clone(), a);
    assert_ne!(a, parse(r"$A =~ /x\/y/ && $B").unwrap());
    assert!(format!("{a:?}").contains("Pattern"));
}

// ---- Fuzzing ------------------------------------------------------------------------------------

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What must hold for any input: a parse evaluates without panicking and renders back to
/// itself; an error points inside the input.
fn check_invariants(src: &str) {
    let lookups: [Lookup<'_>; 3] = [
        &|_| None,
        &|name| Some(name.to_string()),
        &|name| match name {
            "A" => Some(String::new()),
            "B" => Some("/a.*/i".into()),
            "C" => Some("/[/".into()),
            _ => Some(" ".into()),
        },
    ];
    match parse(src) {
        Ok(expr) => {
            for lookup in lookups {
                let _ = expr.evaluate(lookup);
            }
            let rendered = expr.to_string();
            assert_eq!(
                parse(&rendered).as_ref(),
                Ok(&expr),
                "{src:?} -> {rendered:?}"
            );
            let vars = expr.variables();
            let mut unique = vars.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), vars.len());
        }
        Err(e) => {
            assert!(e.offset <= src.len(), "{src:?}: {e:?}");
            assert!(e.offset + e.len <= src.len(), "{src:?}: {e:?}");
            assert!(src.is_char_boundary(e.offset), "{src:?}: {e:?}");
            assert!(src.is_char_boundary(e.offset + e.len), "{src:?}: {e:?}");
            assert!(!e.message.is_empty());
            let _ = e.render(src);
        }
    }
}

#[test]
fn fuzz_random_bytes() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let len = rng.below(40);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                // Bias towards the expression alphabet.
                const ALPHABET: &[u8] = b"$AB_1 \"'/\\()=!~&|n%{}[]ui.*^\n\t";
                if rng.below(4) == 0 {
                    rng.next() as u8
                } else {
                    ALPHABET[rng.below(ALPHABET.len())]
                }
            })
            .collect();
        check_invariants(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn fuzz_token_soup() {
    const SOUP: &[&str] = &[
        "$A",
        "$B",
        "$C",
        "$UNSET",
        "\"x\"",
        "''",
        "'a b'",
        "\"/a/\"",
        "null",
        "/a.*/",
        "/ab/i",
        r"/\//",
        "/[/",
        "//",
        "/",
        "==",
        "!=",
        "=~",
        "!~",
        "&&",
        "||",
        "(",
        ")",
        "(",
        ")",
        "=",
        "!",
        "&",
        "|",
        "${A}",
        "%A%",
        "$",
        "\"",
        "'",
        "\\",
        "main",
        "1",
        " ",
        "\n",
        "é",
        "/ab//",
        "$[[ inputs.x ]]",
        "/a{2000}/",
        "/(?ii)x/",
        "nullx",
    ];
    let mut rng = Rng(42);
    for _ in 0..4000 {
        let n = 1 + rng.below(24);
        let parts: Vec<&str> = (0..n).map(|_| SOUP[rng.below(SOUP.len())]).collect();
        let sep = if rng.below(2) == 0 { " " } else { "" };
        check_invariants(&parts.join(sep));
    }
}

#[test]
fn fuzz_well_formed_expressions() {
    fn generate(rng: &mut Rng, depth: u32, out: &mut String) {
        const LEAVES: &[&str] = &[
            "$A", "$B", "$C", "$UNSET", "\"x\"", "''", "null", "/a.*/", "\"/a/\"",
        ];
        const OPS: &[&str] = &["==", "!=", "=~", "!~", "&&", "||"];
        if depth == 0 || rng.below(3) == 0 {
            out.push_str(LEAVES[rng.below(LEAVES.len())]);
            return;
        }
        let paren = rng.below(3) == 0;
        if paren {
            out.push('(');
        }
        generate(rng, depth - 1, out);
        out.push(' ');
        out.push_str(OPS[rng.below(OPS.len())]);
        out.push(' ');
        generate(rng, depth - 1, out);
        if paren {
            out.push(')');
        }
    }
    let mut rng = Rng(7);
    let mut parsed = 0;
    for _ in 0..2000 {
        let mut src = String::new();
        generate(&mut rng, 4, &mut src);
        if parse(&src).is_ok() {
            parsed += 1;
        }
        check_invariants(&src);
    }
    // Everything generated is well formed, apart from the odd one over the token limit.
    assert!(parsed > 1900, "{parsed}");
}
