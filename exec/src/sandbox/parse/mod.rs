//! Reading test runners' output into a [`TestReport`].
//!
//! One parser per runner ([`cargo`], [`python`] for pytest and unittest, [`go`], [`node`]),
//! each line-based and tolerant: unknown lines are skipped, and whatever could not be
//! attributed to a test still counts: a non-zero exit with no parsed failure becomes one
//! failure of the whole command, with the lines that look like errors as its message. A
//! timed-out run gets a `timeout` failure. When the command does not name its runner the
//! output decides ([`detect`]), and [`generic`] is the fallback.

mod cargo;
mod go;
mod node;
mod python;

use std::path::Path;

use super::report::{FailureCategory, Framework, TestFailure, TestReport};

/// Longest message kept per failure.
pub const MAX_MESSAGE_CHARS: usize = 2000;
/// Most failures the generic parser reports (one per error-looking line).
const MAX_GENERIC_FAILURES: usize = 20;

/// What the parsers need besides the text.
#[derive(Clone, Copy, Debug)]
pub struct ParseContext<'a> {
    /// The project directory the command ran in: absolute paths under it are made relative.
    pub root: &'a Path,
    pub exit_code: Option<i32>,
    pub timed_out: bool,
}

/// Parses `output` as `framework` printed it (or as detected, for [`Framework::Generic`]).
pub fn parse(framework: Framework, output: &str, cx: &ParseContext<'_>) -> (Framework, TestReport) {
    let framework = match framework {
        Framework::Generic => detect(output).unwrap_or(Framework::Generic),
        f => f,
    };
    let mut report = match framework {
        Framework::Cargo => cargo::parse(output, cx),
        Framework::Pytest => python::parse_pytest(output, cx),
        Framework::Unittest => python::parse_unittest(output, cx),
        Framework::Go => go::parse(output, cx),
        Framework::Node => node::parse(output, cx),
        Framework::Generic => generic(output, cx),
    };
    report.exit_code = cx.exit_code;
    report.timed_out = cx.timed_out;
    if cx.timed_out {
        report.fail(TestFailure::new(
            "<timeout>",
            FailureCategory::Timeout,
            "the test command ran past its time limit and was killed",
        ));
    } else if cx.exit_code != Some(0) && report.failures.is_empty() {
        report.fail(command_failure(output, cx.exit_code));
    }
    (framework, report)
}

/// Guesses the runner from its output.
pub fn detect(output: &str) -> Option<Framework> {
    let has = |s: &str| output.contains(s);
    if has("\nrunning ") && has("test result: ") || output.starts_with("running ") {
        Some(Framework::Cargo)
    } else if has("collected ") && has(" items") || has("short test summary info") {
        Some(Framework::Pytest)
    } else if output
        .lines()
        .any(|l| l.starts_with("Ran ") && l.contains(" test"))
    {
        Some(Framework::Unittest)
    } else if output.lines().any(|l| {
        l.starts_with("--- FAIL: ") || l.starts_with("--- PASS: ") || l.starts_with("ok  \t")
    }) {
        Some(Framework::Go)
    } else if has("TAP version")
        || output
            .lines()
            .any(|l| l.starts_with("# tests ") || l.starts_with("ℹ tests "))
    {
        Some(Framework::Node)
    } else {
        None
    }
}

/// No runner recognised: the exit code decides, error-looking lines become failures.
fn generic(output: &str, cx: &ParseContext<'_>) -> TestReport {
    let mut report = TestReport::default();
    if cx.exit_code == Some(0) {
        report.pass("<test command>");
        return report;
    }
    for line in output.lines().map(str::trim) {
        if report.failures.len() >= MAX_GENERIC_FAILURES {
            break;
        }
        if looks_like_error(line) {
            let mut failure = TestFailure::new(truncate(line, 200), FailureCategory::Other, line);
            if let Some((file, l)) = find_location(line, cx.root) {
                failure.file = Some(file);
                failure.line = Some(l);
            }
            report.fail(failure);
        }
    }
    report
}

fn looks_like_error(line: &str) -> bool {
    line.contains("FAIL")
        || line.contains("Error")
        || line.starts_with("error")
        || line.contains(" error:")
}

/// The whole command failed without a recognisable test failure.
fn command_failure(output: &str, exit_code: Option<i32>) -> TestFailure {
    let status = exit_code.map_or_else(
        || "was killed by a signal".to_owned(),
        |c| format!("exited with code {c}"),
    );
    let errors: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| looks_like_error(l))
        .take(10)
        .collect();
    let detail = if errors.is_empty() {
        let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    } else {
        errors.join("\n")
    };
    let class = if errors
        .iter()
        .any(|l| l.contains("error[E") || l.contains("SyntaxError"))
    {
        FailureCategory::Compile
    } else {
        FailureCategory::Other
    };
    let message = if detail.is_empty() {
        format!("the test command {status}")
    } else {
        format!("the test command {status}:\n{detail}")
    };
    TestFailure::new(
        "<test command>",
        class,
        truncate(&message, MAX_MESSAGE_CHARS),
    )
}

/// At most `max` chars of `s`, on a char boundary.
pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// A path as printed, relative to `root` when it is inside it (`./x` becomes `x`).
pub fn relative_path(path: &str, root: &Path) -> String {
    let path = path.trim();
    if let Ok(rest) = Path::new(path).strip_prefix(root) {
        return rest.to_string_lossy().into_owned();
    }
    path.strip_prefix("./").unwrap_or(path).to_owned()
}

/// Whether a printed path is the project's own (relative, or under `root`).
pub fn is_project_path(path: &str, root: &Path) -> bool {
    let p = Path::new(path.trim());
    (p.is_relative() && !path.starts_with('<') && !path.contains("/rustc/")) || p.starts_with(root)
}

/// Parses `file:line` or `file:line:col` at the start of `text` (the file must have an
/// extension, which keeps `Error: 5` and timestamps out).
pub fn parse_location(text: &str, root: &Path) -> Option<(String, u32)> {
    let text = text.trim();
    let mut parts = text.splitn(3, ':');
    let file = parts.next()?;
    let line: u32 = parts.next()?.trim().parse().ok()?;
    let name = Path::new(file).file_name()?.to_str()?;
    if !name.contains('.') || file.contains(char::is_whitespace) {
        return None;
    }
    Some((relative_path(file, root), line))
}

/// The first `path.ext:line` in a line of text.
pub fn find_location(line: &str, root: &Path) -> Option<(String, u32)> {
    line.split(|c: char| {
        c.is_whitespace() || c == '(' || c == ')' || c == '\'' || c == '"' || c == ','
    })
    .find_map(|word| parse_location(word, root))
}

/// The context of the parsers' tests: a command run in `/sbx/work` that exited with `exit_code`.
#[cfg(test)]
fn test_context(exit_code: i32) -> ParseContext<'static> {
    ParseContext {
        root: Path::new("/sbx/work"),
        exit_code: Some(exit_code),
        timed_out: false,
    }
}

#[cfg(test)]
mod tests {
    use super::test_context as cx;
    use super::*;

    #[test]
    fn locations() {
        let root = Path::new("/sbx/work");
        let table = [
            ("src/lib.rs:29:9", Some(("src/lib.rs", 29))),
            ("/sbx/work/calc.py:3", Some(("calc.py", 3))),
            ("./calc.go:5:9: undefined: foo", Some(("calc.go", 5))),
            ("Error: 5", None),
            ("12:30:01", None),
            ("README:3", None),
        ];
        for (text, want) in table {
            let got = parse_location(text, root);
            assert_eq!(got.as_ref().map(|(f, l)| (f.as_str(), *l)), want, "{text}");
        }
        assert_eq!(
            find_location("    at TestContext (/sbx/work/a.test.js:4:40)", root),
            Some(("a.test.js".to_owned(), 4))
        );
    }

    #[test]
    fn generic_runs() {
        let (fw, ok) = parse(Framework::Generic, "all good\n", &cx(0));
        assert_eq!(fw, Framework::Generic);
        assert!(ok.green());
        let (_, bad) = parse(
            Framework::Generic,
            "check 1\nFAIL: widget breaks\nsrc/w.c:10: Error: bad\n",
            &cx(2),
        );
        let names: Vec<&str> = bad.failures.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["FAIL: widget breaks", "src/w.c:10: Error: bad"]);
        assert_eq!(bad.failures[1].file.as_deref(), Some("src/w.c"));
        let (_, silent) = parse(Framework::Generic, "something\nwent wrong\n", &cx(1));
        assert_eq!(silent.failures.len(), 1);
        assert_eq!(silent.failures[0].name, "<test command>");
        assert!(
            silent.failures[0].message.contains("exited with code 1"),
            "{:?}",
            silent.failures
        );
    }

    #[test]
    fn timeouts_are_failures() {
        let context = ParseContext {
            root: Path::new("/x"),
            exit_code: None,
            timed_out: true,
        };
        let (_, report) = parse(Framework::Generic, "", &context);
        assert_eq!(report.failures[0].class, FailureCategory::Timeout);
        assert!(!report.green() && !report.ran_no_tests());
    }

    #[test]
    fn detection() {
        let table = [
            (
                "running 2 tests\ntest a ... ok\n\ntest result: ok.",
                Some(Framework::Cargo),
            ),
            ("collected 3 items\n", Some(Framework::Pytest)),
            (
                "...\nRan 3 tests in 0.001s\n\nOK\n",
                Some(Framework::Unittest),
            ),
            ("--- FAIL: TestX (0.00s)\n", Some(Framework::Go)),
            ("TAP version 13\nok 1 - a\n", Some(Framework::Node)),
            ("hello", None),
        ];
        for (output, want) in table {
            assert_eq!(detect(output), want, "{output}");
        }
    }
}
