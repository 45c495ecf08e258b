//! Python: `unittest` (`python -m unittest -v`) and `pytest`.
//!
//! ```text
//! unittest                                         pytest
//! test_add (calc_test.T.test_add) ... ok           collected 3 items
//! ======================================           test_calc.py::test_add PASSED      (-v)
//! FAIL: test_avg (calc_test.T.test_avg)            ____________ test_avg ____________
//! Traceback (most recent call last):               >   assert avg([2]) == 2
//!   File "/sbx/work/calc.py", line 9, in avg       E   assert 6.0 == 2
//! AssertionError: 6.0 != 4                         test_calc.py:8: AssertionError
//! Ran 3 tests in 0.001s                            FAILED test_calc.py::test_avg - assert 6.0 == 2
//! FAILED (failures=1)                              ===== 1 failed, 2 passed in 0.05s =====
//! ```
//!
//! A failure's file and line are those of the deepest traceback frame inside the project,
//! its class comes from the exception type.

use super::{MAX_MESSAGE_CHARS, ParseContext, is_project_path, relative_path, truncate};
use crate::sandbox::report::{FailureCategory, TestFailure, TestReport};

pub fn parse_unittest(output: &str, cx: &ParseContext<'_>) -> TestReport {
    let mut report = TestReport::default();
    let lines: Vec<&str> = output.lines().collect();
    let mut skipped = 0u32;
    let mut ran: Option<u32> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some((id, result)) = verbose_line(line, i.checked_sub(1).map(|p| lines[p])) {
            match result {
                "ok" | "expected failure" => report.pass(id),
                "FAIL" | "ERROR" | "unexpected success" => {
                    report.fail(TestFailure::new(id, FailureCategory::Other, ""))
                }
                r if r.starts_with("skipped") => skipped += 1,
                _ => {}
            }
        } else if let Some((kind, rest)) = block_header(line) {
            let end = block_end(&lines, i + 1);
            let id = test_id(rest).unwrap_or_else(|| rest.trim().to_owned());
            let mut failure = traceback_failure(&id, &lines[i + 1..end], cx);
            if kind == "FAIL" && failure.class == FailureCategory::Other {
                failure.class = FailureCategory::Assertion;
            }
            report.fail(failure);
            i = end;
            continue;
        } else if let Some(rest) = line.strip_prefix("Ran ") {
            ran = rest.split_whitespace().next().and_then(|n| n.parse().ok());
        }
        i += 1;
    }
    report.collected = ran;
    if let Some(ran) = ran {
        // Without -v only the counts are printed.
        let failed =
            u32::try_from(report.failures.iter().filter(|f| f.is_test()).count()).unwrap_or(0);
        let passed = ran.saturating_sub(failed).saturating_sub(skipped);
        report.passed_count = report.passed_count.max(passed);
    }
    report
}

/// `test_x (mod.Class.test_x) ... ok`, or, for a test with a docstring, the id on the line
/// before `Docstring ... ok`.
fn verbose_line<'a>(line: &'a str, previous: Option<&str>) -> Option<(String, &'a str)> {
    let (head, result) = line.rsplit_once(" ... ")?;
    let result = result.trim();
    let id = test_id(head)
        .or_else(|| previous.and_then(|p| (!p.contains(" ... ")).then(|| test_id(p)).flatten()))?;
    Some((id, result))
}

/// `test_x (mod.Class.test_x)` (3.11+) or `test_x (mod.Class)` -> `mod.Class.test_x`.
fn test_id(text: &str) -> Option<String> {
    let text = text.trim();
    let (method, rest) = text.split_once(" (")?;
    let inner = rest.split_once(')')?.0;
    if method.contains(char::is_whitespace)
        || inner.contains(char::is_whitespace)
        || inner.is_empty()
    {
        return None;
    }
    if inner.ends_with(&format!(".{method}")) {
        Some(inner.to_owned())
    } else {
        Some(format!("{inner}.{method}"))
    }
}

fn block_header(line: &str) -> Option<(&str, &str)> {
    line.strip_prefix("FAIL: ")
        .map(|r| ("FAIL", r))
        .or_else(|| line.strip_prefix("ERROR: ").map(|r| ("ERROR", r)))
}

/// A block runs to the next `=====` line, or to the dashed line just before `Ran N tests`.
fn block_end(lines: &[&str], from: usize) -> usize {
    (from..lines.len())
        .find(|&j| {
            let l = lines[j];
            l.starts_with("=====")
                || l.starts_with("Ran ")
                || (l.starts_with("-----")
                    && lines.get(j + 1).is_some_and(|n| n.starts_with("Ran ")))
        })
        .unwrap_or(lines.len())
}

/// A traceback block: the deepest project frame and the exception raised.
fn traceback_failure(name: &str, block: &[&str], cx: &ParseContext<'_>) -> TestFailure {
    let mut failure = TestFailure::new(name, FailureCategory::Other, "");
    let mut last_frame = 0;
    for (i, line) in block.iter().enumerate() {
        if let Some((file, line_no)) = frame(line) {
            last_frame = i;
            if is_project_path(file, cx.root) {
                failure.file = Some(relative_path(file, cx.root));
                failure.line = Some(line_no);
            }
        }
    }
    // The exception line: the last unindented `Name: message` (or bare `Name`) after the
    // last frame; it may continue on the next lines (assertEqual diffs).
    let tail = &block[last_frame..];
    let exc = tail.iter().rposition(|l| exception_name(l).is_some());
    if let Some(at) = exc {
        let name_of = exception_name(tail[at]).unwrap_or_default();
        failure.class = FailureCategory::from_error_name(name_of);
        let text: Vec<&str> = tail[at..]
            .iter()
            .copied()
            .take_while(|l| !l.starts_with("-----"))
            .collect();
        failure.message = truncate(text.join("\n").trim_end(), MAX_MESSAGE_CHARS);
    } else {
        let text: Vec<&str> = block
            .iter()
            .copied()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        failure.message = truncate(text.join("\n").trim(), MAX_MESSAGE_CHARS);
    }
    failure
}

/// `  File "path", line 12, in func` -> (path, 12).
fn frame(line: &str) -> Option<(&str, u32)> {
    let rest = line.trim_start().strip_prefix("File \"")?;
    let (file, rest) = rest.split_once('"')?;
    let number = rest
        .trim_start_matches(", line ")
        .split(|c: char| !c.is_ascii_digit())
        .next()?;
    Some((file, number.parse().ok()?))
}

/// `AssertionError: ...`, `calc.CustomError: ...`, `KeyError` -> the type name.
fn exception_name(line: &str) -> Option<&str> {
    if line.starts_with(char::is_whitespace) || line.starts_with("Traceback") {
        return None;
    }
    let name = line.split_once(':').map_or(line, |(n, _)| n).trim_end();
    let last = name.rsplit('.').next()?;
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
        && last.chars().next().is_some_and(char::is_uppercase)
        && (last.ends_with("Error")
            || last.ends_with("Exception")
            || last.ends_with("Exit")
            || last.ends_with("Interrupt")
            || line.contains(':'));
    valid.then_some(name)
}

pub fn parse_pytest(output: &str, cx: &ParseContext<'_>) -> TestReport {
    let mut report = TestReport::default();
    let lines: Vec<&str> = output.lines().collect();
    let mut sections: Vec<(String, TestFailure)> = Vec::new();
    let mut in_failures = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(n) = collected(line) {
            report.collected = Some(n);
        } else if let Some((id, status)) = pytest_verbose(line) {
            match status {
                "PASSED" | "XFAIL" => report.pass(id),
                "FAILED" | "ERROR" | "XPASS" => {
                    report.fail(TestFailure::new(id, FailureCategory::Other, ""))
                }
                _ => {}
            }
        } else if line.starts_with("=====")
            && (line.contains(" FAILURES ") || line.contains(" ERRORS "))
        {
            in_failures = true;
        } else if line.starts_with("=====") {
            in_failures = false;
            count_summary(line, &mut report);
        } else if in_failures && line.starts_with("____") {
            let title = line.trim_matches(|c| c == '_' || c == ' ');
            let end = lines[i + 1..]
                .iter()
                .position(|l| l.starts_with("____") || l.starts_with("====="))
                .map_or(lines.len(), |p| i + 1 + p);
            sections.push((
                title.to_owned(),
                section_failure(title, &lines[i + 1..end], cx),
            ));
            i = end;
            continue;
        } else if let Some(rest) = line
            .strip_prefix("FAILED ")
            .or_else(|| line.strip_prefix("ERROR "))
        {
            let (id, message) = rest.split_once(" - ").unwrap_or((rest, ""));
            let id = id.trim();
            let mut failure = TestFailure::new(id, class_of(message), message.trim());
            if let Some((_, section)) = sections.iter().find(|(title, _)| id_matches(id, title)) {
                failure.file.clone_from(&section.file);
                failure.line = section.line;
                if failure.class == FailureCategory::Other {
                    failure.class = section.class;
                }
                if !section.message.is_empty() {
                    failure.message = section.message.clone();
                }
            }
            if !id.contains("::") && failure.class == FailureCategory::Other {
                // An error collecting a whole file.
                failure.class = FailureCategory::Import;
            }
            report.fail(failure);
        }
        i += 1;
    }
    // Failures with a section but no summary line (pytest -rN).
    for (title, section) in sections {
        if !report.failures.iter().any(|f| id_matches(&f.name, &title)) {
            report.fail(section);
        }
    }
    report
}

/// `collected 3 items`, `collected 0 items`, `collected 4 items / 1 error`.
fn collected(line: &str) -> Option<u32> {
    let rest = line
        .strip_prefix("collected ")
        .or_else(|| line.split_once("collected ").map(|(_, r)| r))?;
    let n = rest.split_whitespace().next()?.parse().ok()?;
    rest.contains("item").then_some(n)
}

/// `test_calc.py::test_add PASSED    [ 33%]`.
fn pytest_verbose(line: &str) -> Option<(String, &str)> {
    let mut words = line.split_whitespace();
    let id = words.next()?;
    let status = words.next()?;
    if !id.contains("::") {
        return None;
    }
    matches!(
        status,
        "PASSED" | "FAILED" | "ERROR" | "SKIPPED" | "XFAIL" | "XPASS"
    )
    .then(|| (id.to_owned(), status))
}

/// `== 2 failed, 1 passed, 1 skipped in 0.05s ==` and `== no tests ran in 0.01s ==`.
fn count_summary(line: &str, report: &mut TestReport) {
    let text = line.trim_matches(|c| c == '=' || c == ' ');
    if text.starts_with("no tests ran") {
        report.collected = Some(0);
        return;
    }
    let Some((counts, _)) = text.rsplit_once(" in ") else {
        return;
    };
    for part in counts.split(", ") {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u32>() else { continue };
        if what == "passed" {
            report.passed_count = report.passed_count.max(n);
        }
    }
}

/// A `____ test_x ____` section: `path:line: ExceptionType` at its end locates it.
fn section_failure(title: &str, body: &[&str], cx: &ParseContext<'_>) -> TestFailure {
    let mut failure = TestFailure::new(title, FailureCategory::Other, "");
    let errors: Vec<&str> = body
        .iter()
        .filter_map(|l| l.strip_prefix("E "))
        .map(str::trim)
        .collect();
    for line in body.iter().rev() {
        if let Some((loc, exc)) = line.rsplit_once(": ")
            && let Some((file, line_no)) = super::parse_location(loc, cx.root)
            && is_project_path(&file, cx.root)
        {
            failure.file = Some(file);
            failure.line = Some(line_no);
            failure.class = FailureCategory::from_error_name(exc.trim());
            break;
        }
    }
    if let Some(first) = errors.first()
        && failure.class == FailureCategory::Other
    {
        failure.class = class_of(first);
    }
    failure.message = truncate(&errors.join("\n"), MAX_MESSAGE_CHARS);
    failure
}

/// From a summary message: `assert 1 == 2`, `AttributeError: ...`.
fn class_of(message: &str) -> FailureCategory {
    let message = message.trim();
    if message.starts_with("assert ") || message.starts_with("AssertionError") {
        return FailureCategory::Assertion;
    }
    let name = message.split([':', ' ']).next().unwrap_or("");
    FailureCategory::from_error_name(name)
}

/// Whether a section title (`test_x`, `Class.test_x`, `test_x[1]`) names node id `id`.
fn id_matches(id: &str, title: &str) -> bool {
    let tail = id.split("::").skip(1).collect::<Vec<_>>().join(".");
    tail == title || id == title || (!tail.is_empty() && tail.ends_with(&format!(".{title}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::parse::test_context as cx;

    const UNITTEST: &str = "test_add (test_calc.CalcTest.test_add) ... ok
test_average (test_calc.CalcTest.test_average) ... FAIL
test_is_even (test_calc.CalcTest.test_is_even) ... ERROR

======================================================================
FAIL: test_average (test_calc.CalcTest.test_average)
----------------------------------------------------------------------
Traceback (most recent call last):
  File \"/sbx/work/test_calc.py\", line 11, in test_average
    self.assertEqual(calc.average([2, 4, 6]), 4)
AssertionError: 6.0 != 4

======================================================================
ERROR: test_is_even (test_calc.CalcTest.test_is_even)
----------------------------------------------------------------------
Traceback (most recent call last):
  File \"/sbx/work/test_calc.py\", line 14, in test_is_even
    self.assertTrue(calc.is_even(4))
  File \"/sbx/work/calc.py\", line 13, in is_even
    return n.foo
AttributeError: 'int' object has no attribute 'foo'

----------------------------------------------------------------------
Ran 3 tests in 0.001s

FAILED (failures=1, errors=1)
";

    const IMPORT: &str = "test_x (unittest.loader._FailedTest.test_x) ... ERROR

======================================================================
ERROR: test_x (unittest.loader._FailedTest.test_x)
----------------------------------------------------------------------
ImportError: Failed to import test module: test_x
Traceback (most recent call last):
  File \"/usr/lib/python3.11/unittest/loader.py\", line 419, in _find_test_path
    module = self._get_module_from_name(name)
  File \"/sbx/work/test_x.py\", line 2, in <module>
    import missing_mod
ModuleNotFoundError: No module named 'missing_mod'


----------------------------------------------------------------------
Ran 1 test in 0.000s

FAILED (errors=1)
";

    const PYTEST: &str =
        "============================= test session starts ==============================
platform linux -- Python 3.11.7, pytest-8.0.0, pluggy-1.4.0
rootdir: /sbx/work
collected 3 items

test_calc.py .FF                                                         [100%]

=================================== FAILURES ===================================
_________________________________ test_average _________________________________

    def test_average():
>       assert calc.average([2, 4, 6]) == 4
E       assert 6.0 == 4
E        +  where 6.0 = <function average at 0x7f>([2, 4, 6])

test_calc.py:8: AssertionError
_________________________________ test_is_even _________________________________

    def test_is_even():
>       assert calc.is_even(4)

test_calc.py:11: 
_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ 

    def is_even(n):
>       return n.foo
E       AttributeError: 'int' object has no attribute 'foo'

calc.py:13: AttributeError
=========================== short test summary info ============================
FAILED test_calc.py::test_average - assert 6.0 == 4
FAILED test_calc.py::test_is_even - AttributeError: 'int' object has no attribute 'foo'
========================= 2 failed, 1 passed in 0.05s ==========================
";

    #[test]
    fn unittest_verbose() {
        let report = parse_unittest(UNITTEST, &cx(1));
        assert_eq!(report.collected, Some(3));
        assert_eq!(
            report.passed.iter().collect::<Vec<_>>(),
            ["test_calc.CalcTest.test_add"]
        );
        let f = &report.failures;
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].name, "test_calc.CalcTest.test_average");
        assert_eq!(f[0].class, FailureCategory::Assertion);
        assert_eq!(f[0].message, "AssertionError: 6.0 != 4");
        assert_eq!(
            (f[0].file.as_deref(), f[0].line),
            (Some("test_calc.py"), Some(11))
        );
        assert_eq!(f[1].class, FailureCategory::Attribute);
        assert_eq!(
            (f[1].file.as_deref(), f[1].line),
            (Some("calc.py"), Some(13)),
            "deepest project frame"
        );
    }

    #[test]
    fn unittest_import_errors_and_counts_only() {
        let report = parse_unittest(IMPORT, &cx(1));
        let f = &report.failures[0];
        assert_eq!(f.class, FailureCategory::Import);
        assert_eq!((f.file.as_deref(), f.line), (Some("test_x.py"), Some(2)));
        assert!(
            f.message.starts_with("ModuleNotFoundError"),
            "{}",
            f.message
        );

        let quiet = ".F.\n======================================================================\nFAIL: test_b (m.T.test_b)\n----------------------------------------------------------------------\nTraceback (most recent call last):\n  File \"m.py\", line 5, in test_b\nAssertionError: 1 != 2\n\n----------------------------------------------------------------------\nRan 3 tests in 0.001s\n\nFAILED (failures=1)\n";
        let report = parse_unittest(quiet, &cx(1));
        assert_eq!(report.passed_count, 2);
        assert!(report.passed.is_empty());
        assert_eq!(report.failures[0].name, "m.T.test_b");

        let none = parse_unittest(
            "\n----------------------------------------------------------------------\nRan 0 tests in 0.000s\n\nOK\n",
            &cx(0),
        );
        assert!(none.ran_no_tests());
        assert_eq!(none.collected, Some(0));
    }

    #[test]
    fn pytest_summary_and_sections() {
        let report = parse_pytest(PYTEST, &cx(1));
        assert_eq!(report.collected, Some(3));
        assert_eq!(report.passed_count, 1);
        let f = &report.failures;
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0].name, "test_calc.py::test_average");
        assert_eq!(f[0].class, FailureCategory::Assertion);
        assert_eq!(
            (f[0].file.as_deref(), f[0].line),
            (Some("test_calc.py"), Some(8))
        );
        assert_eq!(f[1].class, FailureCategory::Attribute);
        assert_eq!(
            (f[1].file.as_deref(), f[1].line),
            (Some("calc.py"), Some(13))
        );
    }

    #[test]
    fn pytest_verbose_errors_and_empty() {
        let verbose = "collected 2 items\n\ntest_a.py::test_one PASSED  [ 50%]\ntest_a.py::test_two FAILED  [100%]\n\n=== short test summary info ===\nFAILED test_a.py::test_two - TypeError: unsupported operand\n=== 1 failed, 1 passed in 0.01s ===\n";
        let report = parse_pytest(verbose, &cx(1));
        assert_eq!(
            report.passed.iter().collect::<Vec<_>>(),
            ["test_a.py::test_one"]
        );
        assert_eq!(report.failures[0].class, FailureCategory::Type);

        let errors = "collected 0 items / 1 error\n\n=== short test summary info ===\nERROR test_b.py - ModuleNotFoundError: No module named 'nope'\n=== 1 error in 0.05s ===\n";
        let report = parse_pytest(errors, &cx(2));
        assert_eq!(report.failures[0].name, "test_b.py");
        assert_eq!(report.failures[0].class, FailureCategory::Import);

        let empty = "collected 0 items\n\n=== no tests ran in 0.01s ===\n";
        let report = parse_pytest(empty, &cx(5));
        assert_eq!(report.collected, Some(0));
        assert!(report.ran_no_tests());
    }
}
