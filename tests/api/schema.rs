//! schema.graphql is generated from the code and checked in; this test fails when they differ.

#[test]
fn schema_graphql_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema.graphql");
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = settle::graphql::sdl();
    if checked_in != generated {
        let diff: Vec<String> = diff_lines(&checked_in, &generated);
        panic!(
            "schema.graphql differs from the code's schema.\n{}\n\nTo update it, run:\n    cargo run -p settle-server --bin settle -- schema > schema.graphql\n",
            diff.join("\n")
        );
    }
}

/// A small line diff: lines only in the file (-) and only in the code (+).
fn diff_lines(old: &str, new: &str) -> Vec<String> {
    let old_lines: std::collections::HashSet<&str> = old.lines().collect();
    let new_lines: std::collections::HashSet<&str> = new.lines().collect();
    let mut out: Vec<String> = old.lines().filter(|l| !new_lines.contains(l)).map(|l| format!("- {l}")).collect();
    out.extend(new.lines().filter(|l| !old_lines.contains(l)).map(|l| format!("+ {l}")));
    out
}

#[test]
fn every_error_code_is_documented() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/errors.md");
    let docs = std::fs::read_to_string(&path).expect("docs/errors.md exists");
    for code in settle::error::ErrorCode::ALL {
        assert!(docs.contains(&format!("## {}", code.as_str())), "docs/errors.md has no section for {code}");
    }
}
