//! Re-running only the failing tests: each runner's way of selecting tests by name.
//!
//! | runner   | appended                                   |
//! |----------|--------------------------------------------|
//! | cargo    | `-- NAME... --exact` (after an existing `--` without a second one) |
//! | pytest   | the node ids                               |
//! | unittest | `-k ID` per test (substring of the full id) |
//! | go       | `-run '^(TestA\|TestB)$'` (top-level names) |
//! | node     | `--test-name-pattern='^(a\|b)$'` after `--test` |
//! | generic  | none: the whole suite runs                 |
//!
//! Only plain commands are rewritten: one with pipes, redirections, `;` or command
//! substitution runs whole, as does a failure set with compile errors or timeouts.

use super::report::{Framework, TestFailure};

/// The command that runs just `failures`, or `None` when the whole suite must run.
pub fn targeted_command(
    framework: Framework,
    command: &str,
    failures: &[TestFailure],
) -> Option<String> {
    if failures.is_empty() || failures.iter().any(|f| !f.is_test()) || !plain(command) {
        return None;
    }
    let names: Vec<&str> = failures.iter().map(|f| f.name.as_str()).collect();
    let command = command.trim_end();
    match framework {
        Framework::Cargo => {
            let quoted: Vec<String> = names.iter().map(|n| quote(n)).collect();
            let sep = if command.split_whitespace().any(|w| w == "--") {
                ""
            } else {
                " --"
            };
            Some(format!("{command}{sep} {} --exact", quoted.join(" ")))
        }
        Framework::Pytest => {
            let quoted: Vec<String> = names.iter().map(|n| quote(n)).collect();
            Some(format!("{command} {}", quoted.join(" ")))
        }
        Framework::Unittest => {
            if names.iter().any(|n| n.starts_with("unittest.loader.")) {
                return None;
            }
            let ks: Vec<String> = names.iter().map(|n| format!("-k {}", quote(n))).collect();
            Some(format!("{command} {}", ks.join(" ")))
        }
        Framework::Go => {
            let mut tops: Vec<&str> = names
                .iter()
                .map(|n| n.split('/').next().unwrap_or(n))
                .collect();
            if tops.iter().any(|n| {
                !n.starts_with("Test") && !n.starts_with("Example") && !n.starts_with("Fuzz")
            }) {
                return None;
            }
            tops.dedup();
            Some(format!(
                "{command} -run {}",
                quote(&format!("^({})$", tops.join("|")))
            ))
        }
        Framework::Node => {
            let pattern = format!(
                "^({})$",
                names
                    .iter()
                    .map(|n| regex_escape(n))
                    .collect::<Vec<_>>()
                    .join("|")
            );
            let flag = format!("--test-name-pattern={}", quote(&pattern));
            let words: Vec<&str> = command.split(' ').collect();
            let at = words.iter().position(|w| *w == "--test")?;
            let mut out: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
            out.insert(at + 1, flag);
            Some(out.join(" "))
        }
        Framework::Generic => None,
    }
}

/// No shell plumbing that appending arguments would break.
fn plain(command: &str) -> bool {
    !command.contains(['|', ';', '<', '>', '`', '\n'])
        && !command.contains("$(")
        && !command.trim_end().ends_with('&')
}

/// Single-quotes a word for `sh`.
pub fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@,+".contains(c))
    {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::report::FailureCategory;

    fn tests(names: &[&str]) -> Vec<TestFailure> {
        names
            .iter()
            .map(|n| TestFailure::new(*n, FailureCategory::Assertion, ""))
            .collect()
    }

    #[test]
    fn per_runner() {
        let table = [
            (
                Framework::Cargo,
                "cargo test --offline",
                vec!["tests::a", "tests::b"],
                Some("cargo test --offline -- tests::a tests::b --exact"),
            ),
            (
                Framework::Cargo,
                "cargo test -- --test-threads=1",
                vec!["a"],
                Some("cargo test -- --test-threads=1 a --exact"),
            ),
            (
                Framework::Pytest,
                "pytest -q",
                vec!["t.py::test_a[1-2]"],
                Some("pytest -q 't.py::test_a[1-2]'"),
            ),
            (
                Framework::Unittest,
                "python3 -m unittest -v",
                vec!["m.T.test_a", "m.T.test_b"],
                Some("python3 -m unittest -v -k m.T.test_a -k m.T.test_b"),
            ),
            (
                Framework::Unittest,
                "python3 -m unittest",
                vec!["unittest.loader._FailedTest.m"],
                None,
            ),
            (
                Framework::Go,
                "go test ./...",
                vec!["TestA/sub", "TestB"],
                Some("go test ./... -run '^(TestA|TestB)$'"),
            ),
            (
                Framework::Go,
                "go test ./...",
                vec!["example.com/pkg"],
                None,
            ),
            (
                Framework::Node,
                "node --test tests/",
                vec!["adds (x)"],
                Some("node --test --test-name-pattern='^(adds \\(x\\))$' tests/"),
            ),
            (Framework::Node, "npm test", vec!["a"], None),
            (Framework::Generic, "make test", vec!["a"], None),
            (Framework::Cargo, "cargo test | tee log", vec!["a"], None),
            (
                Framework::Cargo,
                "cd x && cargo test",
                vec!["a"],
                Some("cd x && cargo test -- a --exact"),
            ),
        ];
        for (fw, command, names, want) in table {
            assert_eq!(
                targeted_command(fw, command, &tests(&names)).as_deref(),
                want,
                "{command}"
            );
        }
        let compile = vec![TestFailure::new(
            "src/lib.rs:3: error",
            FailureCategory::Compile,
            "",
        )];
        assert_eq!(
            targeted_command(Framework::Cargo, "cargo test", &compile),
            None
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("tests::a"), "tests::a");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }
}
