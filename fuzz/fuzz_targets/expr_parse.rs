//! The `rules:if` expression language: parse, evaluate, list variables, and parse the
//! normalized rendering again.
#![no_main]

use gantry_pipeline::expr;
use libfuzzer_sys::fuzz_target;

/// A few fixed variables: set, empty, blank, holding a regex, an invalid regex, a number.
fn lookup(name: &str) -> Option<String> {
    match name {
        "CI_COMMIT_BRANCH" => Some("main".into()),
        "CI_PIPELINE_SOURCE" => Some("merge_request_event".into()),
        "CI_COMMIT_TAG" => Some("v1.2.3".into()),
        "EMPTY" => Some(String::new()),
        "BLANK" => Some("  \t".into()),
        "PATTERN" => Some("/^ma.*$/i".into()),
        "BAD_PATTERN" => Some("/(unclosed/".into()),
        "NUM" => Some("42".into()),
        "SLASHES" => Some("/".into()),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match expr::parse(src) {
        Ok(e) => {
            let _ = e.evaluate(&lookup);
            let _ = e.evaluate(&|_| None);
            let _ = e.evaluate(&|_| Some(String::new()));
            let _ = e.variables();
            let shown = e.to_string();
            // The rendering must parse (the Display docs promise "parses back to an equal Expr").
            match expr::parse(&shown) {
                Ok(again) => {
                    assert_eq!(
                        again, e,
                        "{src:?} renders as {shown:?}, which parses differently"
                    );
                    let _ = again.evaluate(&lookup);
                }
                Err(err) => panic!(
                    "normalized rendering does not parse: {src:?} -> {shown:?}: {}",
                    err.message
                ),
            }
        }
        Err(err) => {
            // The model slices `src[..offset]` to place the diagnostic: the offset must be in
            // the input and on a character boundary.
            assert!(
                err.offset <= src.len() && src.is_char_boundary(err.offset),
                "error offset {} is not a char boundary of {src:?}",
                err.offset
            );
            let _ = err.render(src);
            let _ = err.to_string();
        }
    }
});
