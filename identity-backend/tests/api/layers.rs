//! The backend's layer rules (docs/design.md, "Backend layout"), checked on the source:
//! storage never speaks HTTP, and no row is decoded by column position.

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    quantaid_testkit::package_dir().join("src")
}

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn storage_never_uses_the_http_layer_or_its_error() {
    let mut files = rust_files(&src().join("storage"));
    files.push(src().join("storage.rs"));
    assert!(files.len() > 5, "the storage layer was not found");
    let mut problems = Vec::new();
    for file in &files {
        let source = read(file);
        for banned in ["ApiError", "ApiResult", "axum", "crate::http", "crate::error", "crate::domain"] {
            if source.contains(banned) {
                problems.push(format!("{} mentions {banned}", file.display()));
            }
        }
    }
    assert!(problems.is_empty(), "storage must return StorageError and know nothing of HTTP:\n{}", problems.join("\n"));
}

/// Where `source` reads a column by position: `.get(3)`, `.try_get(0)`, `.get::<_, T>(1)`.
fn positional_reads(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in source.match_indices("get") {
        let rest = &source[at + 3..];
        let args = match rest.strip_prefix("::<") {
            // Skip the turbofish, which may nest (`Option<Vec<u8>>`).
            Some(generic) => {
                let mut depth = 1;
                let Some(end) = generic.char_indices().find_map(|(i, c)| {
                    depth += match c {
                        '<' => 1,
                        '>' => -1,
                        _ => 0,
                    };
                    (depth == 0).then_some(i)
                }) else {
                    continue;
                };
                &generic[end + 1..]
            }
            None => rest,
        };
        if args.strip_prefix('(').and_then(|a| a.trim_start().chars().next()).is_some_and(|c| c.is_ascii_digit()) {
            let line = source[..at].lines().count();
            found.push(format!("line {line}: {}", source.lines().nth(line.saturating_sub(1)).unwrap_or("").trim()));
        }
    }
    found
}

#[test]
fn rows_are_decoded_by_column_name() {
    assert_eq!(positional_reads("r.get(0) r.try_get( 2) r.get::<_, Option<Vec<u8>>>(1)").len(), 3);
    assert!(positional_reads(r#"r.get("id") r.try_get("user_id") headers.get(name) r.get::<_, i64>("count")"#).is_empty());
    let mut problems = Vec::new();
    for file in rust_files(&src()) {
        for read in positional_reads(&read(&file)) {
            problems.push(format!("{}: {read}", file.display()));
        }
    }
    assert!(problems.is_empty(), "decode rows by column name, in the row type's `from_row`:\n{}", problems.join("\n"));
}
