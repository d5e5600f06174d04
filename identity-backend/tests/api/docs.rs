//! docs/design.md names, for each invariant, the module and function that enforce it and
//! the tests that prove it. This keeps those names true as the code moves: every
//! repository path it cites exists, and in the invariants section every test after
//! "`file.rs` →" is a function of that file and every item after "`file.rs` —" appears
//! in it.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

const TOP_LEVEL: [&str; 10] =
    ["identity-backend/", "proxy/", "protocol/", "runtime/", "testkit/", "test-stack/", "loadtest/", "deploy/", "scripts/", "docs/"];

static REPO: LazyLock<PathBuf> = LazyLock::new(|| quantaid_testkit::package_dir().join(".."));

fn repo() -> &'static Path {
    &REPO
}

/// The backticked spans of `text`, each with the text between it and the previous span.
fn spans(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('`') {
        let Some(len) = rest[start + 1..].find('`') else { break };
        out.push((&rest[..start], &rest[start + 1..start + 1 + len]));
        rest = &rest[start + len + 2..];
    }
    out
}

fn is_repo_path(span: &str) -> bool {
    TOP_LEVEL.iter().any(|top| span.starts_with(top)) && !span.contains(' ') && !span.contains('{')
}

/// Whether `word` occurs in `source` as a whole identifier.
fn has_word(source: &str, word: &str) -> bool {
    source.match_indices(word).any(|(at, _)| {
        let ident = |c: char| c.is_alphanumeric() || c == '_';
        let before = source[..at].chars().next_back().is_none_or(|c| !ident(c));
        let after = source[at + word.len()..].chars().next().is_none_or(|c| !ident(c));
        before && after
    })
}

fn is_identifier(span: &str) -> bool {
    !span.is_empty() && span.chars().all(|c| c.is_alphanumeric() || c == '_' || c == ':') && span.chars().any(char::is_alphabetic)
}

#[test]
fn design_md_names_real_files_functions_and_tests() {
    let design = std::fs::read_to_string(repo().join("docs/design.md")).expect("docs/design.md");
    let invariants = design.find("## The eight invariants").expect("the invariants section");
    let after = design[invariants..].find("\n## ").map_or(design.len(), |end| invariants + end);
    let mut problems = Vec::new();
    let mut checked = 0;
    // The file whose tests (→) or items (—) the following spans name, until a new bullet,
    // paragraph or file.
    let mut current: Option<(String, String, bool)> = None;
    let mut offset = 0;
    for (between, span) in spans(&design) {
        offset += between.len() + span.len() + 2;
        let in_invariants = (invariants..after).contains(&offset);
        if between.contains("\n-") || between.contains("\n\n") || between.contains("\n#") || between.contains('|') {
            current = None;
        }
        if is_repo_path(span) {
            let path = repo().join(span.trim_end_matches('/'));
            if !path.exists() {
                problems.push(format!("{span}: no such file or folder"));
                current = None;
                continue;
            }
            current = None;
            if span.ends_with(".rs") {
                let source = std::fs::read_to_string(&path).unwrap_or_default();
                current = Some((span.to_string(), source, false));
            }
            continue;
        }
        let Some((file, source, is_tests)) = current.as_mut().filter(|_| in_invariants) else { continue };
        if between.contains('→') {
            *is_tests = true;
        }
        if !is_identifier(span) {
            continue;
        }
        let name = span.rsplit("::").next().unwrap_or(span);
        checked += 1;
        if *is_tests {
            if !has_word(source, &format!("fn {name}")) {
                problems.push(format!("{file}: no test fn {name}"));
            }
        } else if !has_word(source, name) {
            problems.push(format!("{file}: no {span}"));
        }
    }
    assert!(checked > 100, "only {checked} names checked: has the format of docs/design.md changed?");
    assert!(problems.is_empty(), "docs/design.md is out of date:\n{}", problems.join("\n"));
}
