//! Which files a fixer is shown: the ones the failures point at first, then test files,
//! then the rest of the project's source, while they fit.
//!
//! ```text
//!  1. files named by failures (file field)        each file at most MAX_FILE_BYTES,
//!  2. project files mentioned in the test output  all together at most MAX_TOTAL_BYTES;
//!     (tracebacks, compiler errors, stacks)       binary and non-UTF-8 files never
//!  3. test files (tests/, test_*.py, *_test.go,
//!     *.test.js, Rust files with #[test])
//!  4. other source files, in path order
//! ```

use std::collections::BTreeSet;

use super::report::TestFailure;
use super::tree::{Entry, Snapshot};

pub const MAX_FILE_BYTES: usize = 64 * 1024;
pub const MAX_TOTAL_BYTES: usize = 256 * 1024;
/// Extensions of files worth showing.
const SOURCE_EXTENSIONS: [&str; 24] = [
    "rs", "py", "go", "js", "mjs", "cjs", "ts", "tsx", "jsx", "c", "h", "cc", "cpp", "hpp", "java",
    "kt", "rb", "sh", "toml", "cfg", "ini", "json", "yaml", "yml",
];

/// `(relative path, content)` of the files to show, most relevant first.
pub fn relevant_files(
    snapshot: &Snapshot,
    failures: &[TestFailure],
    output: &str,
) -> Vec<(String, String)> {
    let paths: Vec<&str> = snapshot.files.keys().map(String::as_str).collect();
    let named = paths
        .iter()
        .filter(|p| failures.iter().any(|f| f.file.as_deref() == Some(**p)));
    let in_output = paths.iter().filter(|p| mentioned(output, p));
    let tests = paths.iter().filter(|p| is_test_file(p, snapshot));
    let sources = paths.iter().filter(|p| is_source(p));
    let mut seen = BTreeSet::new();
    let order: Vec<&str> = named
        .chain(in_output)
        .chain(tests)
        .chain(sources)
        .copied()
        .filter(|p| seen.insert(*p))
        .collect();
    let mut total = 0;
    let mut files = Vec::new();
    for path in order {
        let Some(Entry::File { data, .. }) = snapshot.files.get(path) else {
            continue;
        };
        if data.len() > MAX_FILE_BYTES || total + data.len() > MAX_TOTAL_BYTES || data.contains(&0)
        {
            continue;
        }
        let Ok(text) = std::str::from_utf8(data) else {
            continue;
        };
        total += data.len();
        files.push((path.to_owned(), text.to_owned()));
    }
    files
}

/// Whether `output` names `path` as a whole path (not as the tail of a longer name).
fn mentioned(output: &str, path: &str) -> bool {
    output.match_indices(path).any(|(at, _)| {
        let before = output[..at].chars().next_back();
        let after = output[at + path.len()..].chars().next();
        let boundary_before =
            before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '.' || c == '-'));
        let boundary_after = after.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        boundary_before && boundary_after
    })
}

fn is_source(path: &str) -> bool {
    path.rsplit_once('.')
        .is_some_and(|(_, ext)| SOURCE_EXTENSIONS.contains(&ext))
}

fn is_test_file(path: &str, snapshot: &Snapshot) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let in_test_dir = path
        .split('/')
        .any(|c| c == "tests" || c == "test" || c == "__tests__");
    let by_name = name.starts_with("test_")
        || name.ends_with("_test.py")
        || name.ends_with("_test.go")
        || name.contains(".test.")
        || name.contains(".spec.");
    let rust_tests = name.ends_with(".rs")
        && matches!(snapshot.files.get(path), Some(Entry::File { data, .. }) if contains(data, b"#[test]"));
    is_source(path) && (in_test_dir || by_name || rust_tests)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::report::FailureCategory;

    fn file(text: &str) -> Entry {
        Entry::File {
            data: text.as_bytes().to_vec(),
            mode: 0o644,
        }
    }

    #[test]
    fn most_relevant_first_and_capped() {
        let mut snap = Snapshot::default();
        snap.files.insert("README.md".into(), file("docs"));
        snap.files
            .insert("a/util.py".into(), file("def f(): pass\n"));
        snap.files
            .insert("calc.py".into(), file("def avg(): pass\n"));
        snap.files.insert("lib.py".into(), file("x = 1\n"));
        snap.files
            .insert("test_calc.py".into(), file("import calc\n"));
        snap.files
            .insert("big.py".into(), file(&"#".repeat(MAX_FILE_BYTES + 1)));
        snap.files.insert(
            "blob.py".into(),
            Entry::File {
                data: vec![0, 1, 2],
                mode: 0o644,
            },
        );
        let mut failure = TestFailure::new("t", FailureCategory::Assertion, "");
        failure.file = Some("test_calc.py".into());
        let output = "  File \"/sbx/work/calc.py\", line 3, in avg\n  File \"/sbx/work/mylib.py\"";
        let files = relevant_files(&snap, &[failure], output);
        let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["test_calc.py", "calc.py", "a/util.py", "lib.py"]);
    }

    #[test]
    fn whole_path_mentions() {
        assert!(mentioned("at src/lib.rs:3", "src/lib.rs"));
        assert!(mentioned("/sbx/work/lib.py\"", "lib.py"));
        assert!(!mentioned("mylib.py", "lib.py"));
        assert!(!mentioned("lib.pyc", "lib.py"));
    }
}
