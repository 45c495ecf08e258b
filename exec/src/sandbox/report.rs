//! What one run of a test command told us: which tests passed, which failed and why.
//!
//! The parsers in [`super::parse`] fill a [`TestReport`] from a runner's text output; the
//! loop compares reports to decide whether a change fixed, improved, stalled or regressed
//! the suite. A report never claims success on its own: [`TestReport::green`] needs a zero
//! exit code, no failures *and* at least one test that ran.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The test runner behind a command: decides how its output is read and how a subset of
/// tests is re-run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Framework {
    Cargo,
    Pytest,
    Unittest,
    Go,
    Node,
    Generic,
}

impl Framework {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cargo => "cargo",
            Self::Pytest => "pytest",
            Self::Unittest => "unittest",
            Self::Go => "go",
            Self::Node => "node",
            Self::Generic => "generic",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "cargo" | "rust" => Self::Cargo,
            "pytest" => Self::Pytest,
            "unittest" | "python" => Self::Unittest,
            "go" | "golang" => Self::Go,
            "node" | "node-test" | "nodejs" => Self::Node,
            "generic" => Self::Generic,
            _ => return None,
        })
    }

    /// The runner a shell command invokes, when the command says so.
    pub fn infer(command: &str) -> Option<Self> {
        let words: Vec<&str> = command.split_whitespace().collect();
        let has_pair = |a: &str, b: &str| words.windows(2).any(|w| w[0].ends_with(a) && w[1] == b);
        if has_pair("cargo", "test") {
            Some(Self::Cargo)
        } else if words
            .iter()
            .any(|w| *w == "pytest" || w.ends_with("/pytest") || *w == "py.test")
        {
            Some(Self::Pytest)
        } else if words.contains(&"unittest") {
            Some(Self::Unittest)
        } else if has_pair("go", "test") {
            Some(Self::Go)
        } else if words.contains(&"--test") && words.iter().any(|w| w.ends_with("node")) {
            Some(Self::Node)
        } else {
            None
        }
    }
}

/// Why a test failed, coarsely: what kind of fix it probably needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureCategory {
    Assertion,
    Attribute,
    Type,
    Import,
    Compile,
    Timeout,
    Other,
}

impl FailureCategory {
    /// From an exception or error type name (`AssertionError`, `TypeError`, ...).
    pub fn from_error_name(name: &str) -> Self {
        let name = name.rsplit('.').next().unwrap_or(name);
        match name {
            "AssertionError" | "AssertError" => Self::Assertion,
            "AttributeError" => Self::Attribute,
            "TypeError" => Self::Type,
            "ImportError" | "ModuleNotFoundError" => Self::Import,
            "SyntaxError" | "IndentationError" | "TabError" => Self::Compile,
            "TimeoutError" => Self::Timeout,
            _ => Self::Other,
        }
    }
}

/// One failing test (or one compile error, or the whole command when nothing finer is known).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestFailure {
    /// The runner's id of the test (`tests::adds`, `test_calc.CalcTest.test_add`,
    /// `test_x.py::test_a`, `TestAdd`), or a stable description of a compile error.
    pub name: String,
    pub class: FailureCategory,
    pub message: String,
    /// Relative to the project root when the file is inside it.
    pub file: Option<String>,
    pub line: Option<u32>,
}

impl TestFailure {
    pub fn new(
        name: impl Into<String>,
        class: FailureCategory,
        message: impl Into<String>,
    ) -> Self {
        TestFailure {
            name: name.into(),
            class,
            message: message.into(),
            file: None,
            line: None,
        }
    }

    /// Whether the name is a test id a runner can be asked to re-run.
    pub fn is_test(&self) -> bool {
        !matches!(
            self.class,
            FailureCategory::Compile | FailureCategory::Timeout
        ) && !self.name.starts_with('<')
    }
}

/// Counts of one run, as reported in the outputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestCounts {
    pub total: u32,
    pub passed: u32,
    pub failed: u32,
}

/// The parsed result of one run of the test command.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TestReport {
    /// Tests that passed, by name, when the runner lists them.
    pub passed: BTreeSet<String>,
    /// How many passed (at least `passed.len()`; more when only counts are printed).
    pub passed_count: u32,
    pub failures: Vec<TestFailure>,
    /// What the runner said it collected or ran, when it said so.
    pub collected: Option<u32>,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
}

impl TestReport {
    pub fn failed_names(&self) -> BTreeSet<String> {
        self.failures.iter().map(|f| f.name.clone()).collect()
    }

    /// Failing tests (compile errors and the like excluded).
    fn failed_tests(&self) -> u32 {
        let n = self.failures.iter().filter(|f| f.is_test()).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    pub fn counts(&self) -> TestCounts {
        let failed = u32::try_from(self.failures.len()).unwrap_or(u32::MAX);
        let seen = self.passed_count.saturating_add(self.failed_tests());
        TestCounts {
            total: self.collected.unwrap_or(0).max(seen),
            passed: self.passed_count,
            failed,
        }
    }

    /// The command ran and nothing was collected: never a success.
    pub fn ran_no_tests(&self) -> bool {
        !self.timed_out && self.failures.is_empty() && self.passed_count == 0
    }

    pub fn green(&self) -> bool {
        self.exit_code == Some(0) && self.failures.is_empty() && self.passed_count > 0
    }

    /// Records a passing test by name.
    pub fn pass(&mut self, name: impl Into<String>) {
        if self.passed.insert(name.into()) {
            self.passed_count = self
                .passed_count
                .max(u32::try_from(self.passed.len()).unwrap_or(u32::MAX));
        }
    }

    /// Adds a failure unless one with the same name is already there (a runner may print
    /// the same failure twice: once inline, once in its summary).
    pub fn fail(&mut self, failure: TestFailure) {
        if let Some(existing) = self.failures.iter_mut().find(|f| f.name == failure.name) {
            if existing.message.is_empty() {
                existing.message = failure.message;
            }
            if existing.file.is_none() {
                existing.file = failure.file;
                existing.line = failure.line;
            }
            if existing.class == FailureCategory::Other {
                existing.class = failure.class;
            }
            return;
        }
        self.passed.remove(&failure.name);
        self.failures.push(failure);
    }

    pub fn failure_mut(&mut self, name: &str) -> Option<&mut TestFailure> {
        self.failures.iter_mut().find(|f| f.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frameworks_from_commands() {
        let table = [
            ("cargo test --offline", Some(Framework::Cargo)),
            ("cd x && cargo test -- --nocapture", Some(Framework::Cargo)),
            ("python3 -m pytest -q", Some(Framework::Pytest)),
            ("pytest tests/", Some(Framework::Pytest)),
            ("python3 -m unittest -v", Some(Framework::Unittest)),
            ("go test ./...", Some(Framework::Go)),
            ("node --test", Some(Framework::Node)),
            ("/usr/bin/node --test tests/", Some(Framework::Node)),
            ("make check", None),
            ("npm test", None),
        ];
        for (command, want) in table {
            assert_eq!(Framework::infer(command), want, "{command}");
        }
    }

    #[test]
    fn a_report_without_tests_is_not_green() {
        let mut report = TestReport {
            exit_code: Some(0),
            ..TestReport::default()
        };
        assert!(report.ran_no_tests());
        assert!(!report.green());
        report.pass("a");
        assert!(report.green());
        report.fail(TestFailure::new("a", FailureCategory::Assertion, "boom"));
        assert!(!report.green());
        assert!(
            report.passed.is_empty(),
            "a failing test is not also passing"
        );
    }

    #[test]
    fn duplicate_failures_merge() {
        let mut report = TestReport::default();
        report.fail(TestFailure::new("t", FailureCategory::Other, ""));
        let mut second = TestFailure::new("t", FailureCategory::Assertion, "left != right");
        second.file = Some("src/lib.rs".into());
        second.line = Some(3);
        report.fail(second);
        assert_eq!(report.failures.len(), 1);
        let f = &report.failures[0];
        assert_eq!(
            (f.class, f.message.as_str()),
            (FailureCategory::Assertion, "left != right")
        );
        assert_eq!((f.file.as_deref(), f.line), (Some("src/lib.rs"), Some(3)));
    }
}
