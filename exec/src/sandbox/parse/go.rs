//! `go test` (plain and `-v`).
//!
//! ```text
//! --- FAIL: TestSub (0.00s)              -> failed; the indented lines below it are the
//!     calc_test.go:12: got 1, want 2        message, the first `file:line` locates it
//! --- PASS: TestAdd (0.00s)              -> passed (only printed with -v)
//! ok   example.com/calc  0.002s          -> the package passed: without -v it stands in
//!                                           for its tests, so a regression is still seen
//! # example.com/calc                     -> a build failure: each `file:line:col: msg`
//! ./calc.go:5:9: undefined: foo             is one compile failure
//! FAIL example.com/calc [build failed]
//! ```

use super::{
    MAX_MESSAGE_CHARS, ParseContext, find_location, is_project_path, parse_location, truncate,
};
use crate::sandbox::report::{FailureCategory, TestFailure, TestReport};

pub fn parse(output: &str, cx: &ParseContext<'_>) -> TestReport {
    let mut report = TestReport::default();
    let lines: Vec<&str> = output.lines().collect();
    let mut in_build_errors = false;
    let mut named_passes = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("--- FAIL: ") {
            let name = test_name(rest);
            let end = lines[i + 1..]
                .iter()
                .position(|l| is_boundary(l))
                .map_or(lines.len(), |p| i + 1 + p);
            report.fail(test_failure(name, &lines[i + 1..end], cx));
            in_build_errors = false;
            i = end;
            continue;
        } else if let Some(rest) = trimmed.strip_prefix("--- PASS: ") {
            report.pass(test_name(rest));
            named_passes = true;
        } else if let Some(rest) = line.strip_prefix("ok  ") {
            let package = rest.split_whitespace().next().unwrap_or_default();
            if !named_passes && !rest.contains("[no tests to run]") {
                report.pass(package.to_owned());
            }
        } else if line.starts_with("# ") {
            in_build_errors = true;
        } else if in_build_errors {
            if let Some((file, line_no)) = parse_location(line, cx.root) {
                let message = line
                    .splitn(4, ':')
                    .nth(3)
                    .or_else(|| line.splitn(3, ':').nth(2))
                    .unwrap_or("")
                    .trim();
                let mut failure = TestFailure::new(
                    format!("{file}:{line_no}: {message}"),
                    FailureCategory::Compile,
                    line.trim(),
                );
                failure.file = Some(file);
                failure.line = Some(line_no);
                report.fail(failure);
            } else if !line.starts_with('\t') && !line.starts_with(' ') {
                in_build_errors = false;
            }
        }
        i += 1;
    }
    let named = report.passed.len() + report.failures.iter().filter(|f| f.is_test()).count();
    if named > 0 {
        report.collected = u32::try_from(named).ok();
    }
    report
}

/// `TestX (0.00s)` -> `TestX`.
fn test_name(rest: &str) -> String {
    rest.split_whitespace().next().unwrap_or(rest).to_owned()
}

fn is_boundary(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("--- ")
        || t.starts_with("=== ")
        || line.starts_with("FAIL")
        || line.starts_with("ok  ")
        || line == "PASS"
}

/// The lines a failed test printed: `file_test.go:12: message`, or a panic and its stack.
fn test_failure(name: String, body: &[&str], cx: &ParseContext<'_>) -> TestFailure {
    let mut failure = TestFailure::new(name, FailureCategory::Assertion, "");
    let text: Vec<&str> = body
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    if text.iter().any(|l| l.starts_with("panic: ")) {
        failure.class = FailureCategory::Other;
    }
    let location = text.iter().find_map(|l| {
        let loc = find_location(l, cx.root)?;
        is_project_path(&loc.0, cx.root).then_some(loc)
    });
    if let Some((file, line)) = location {
        failure.file = Some(file);
        failure.line = Some(line);
    }
    failure.message = truncate(&text.join("\n"), MAX_MESSAGE_CHARS);
    failure
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::parse::test_context as cx;

    #[test]
    fn verbose_run() {
        let out = "=== RUN   TestAdd\n--- PASS: TestAdd (0.00s)\n=== RUN   TestSub\n    calc_test.go:12: Sub(3, 1) = 1, want 2\n--- FAIL: TestSub (0.00s)\nFAIL\nFAIL\texample.com/calc\t0.002s\nFAIL\n";
        let report = parse(out, &cx(1));
        assert_eq!(report.passed.iter().collect::<Vec<_>>(), ["TestAdd"]);
        assert_eq!(report.failures.len(), 1);
        assert_eq!(report.collected, Some(2));
    }

    #[test]
    fn plain_run_with_message_and_package_pass() {
        let out = "--- FAIL: TestSub (0.00s)\n    calc_test.go:12: Sub(3, 1) = 1, want 2\nFAIL\nFAIL\texample.com/calc\t0.002s\nok  \texample.com/other\t0.001s\n?   \texample.com/none\t[no test files]\nFAIL\n";
        let report = parse(out, &cx(1));
        let f = &report.failures[0];
        assert_eq!(f.name, "TestSub");
        assert_eq!(f.class, FailureCategory::Assertion);
        assert_eq!(
            (f.file.as_deref(), f.line),
            (Some("calc_test.go"), Some(12))
        );
        assert_eq!(f.message, "calc_test.go:12: Sub(3, 1) = 1, want 2");
        assert_eq!(
            report.passed.iter().collect::<Vec<_>>(),
            ["example.com/other"]
        );
    }

    #[test]
    fn build_failures_and_empty_packages() {
        let out = "# example.com/calc [example.com/calc.test]\n./calc.go:5:9: undefined: foo\nFAIL\texample.com/calc [build failed]\nFAIL\n";
        let report = parse(out, &cx(1));
        let f = &report.failures[0];
        assert_eq!(f.name, "calc.go:5: undefined: foo");
        assert_eq!(f.class, FailureCategory::Compile);
        assert_eq!(f.line, Some(5));

        let none = parse(
            "ok  \texample.com/calc\t0.001s [no tests to run]\n?   \texample.com/x\t[no test files]\n",
            &cx(0),
        );
        assert!(none.ran_no_tests());
    }

    #[test]
    fn panics() {
        let out = "--- FAIL: TestIdx (0.00s)\npanic: runtime error: index out of range [3] with length 2 [recovered]\n\tpanic: runtime error: index out of range [3] with length 2\n\ngoroutine 7 [running]:\ntesting.tRunner.func1.2({0x5f, 0xc})\n\t/usr/lib/go/src/testing/testing.go:1545 +0x238\nexample.com/calc.Get(...)\n\t/sbx/work/calc.go:9\nFAIL\texample.com/calc\t0.003s\n";
        let report = parse(out, &cx(2));
        let f = &report.failures[0];
        assert_eq!(f.class, FailureCategory::Other);
        assert_eq!((f.file.as_deref(), f.line), (Some("calc.go"), Some(9)));
    }
}
