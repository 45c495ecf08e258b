//! `node --test`: the TAP reporter (the default when stdout is not a terminal) and the
//! `spec` reporter.
//!
//! ```text
//! ok 1 - adds                          ✔ adds (0.5ms)
//! not ok 2 - subtracts badly           ✖ subtracts badly (1.1ms)
//!   ---                                  AssertionError [ERR_ASSERTION]: ...
//!   location: '/sbx/work/m.test.js:4:1'      at TestContext.<anonymous> (/sbx/work/m.test.js:4:40)
//!   error: |-                          ℹ tests 3
//!     Expected values to be ...
//!   name: 'AssertionError'
//!   ...
//! # tests 3
//! ```

use super::{
    MAX_MESSAGE_CHARS, ParseContext, find_location, is_project_path, parse_location, truncate,
};
use crate::sandbox::report::{FailureCategory, TestFailure, TestReport};

pub fn parse(output: &str, cx: &ParseContext<'_>) -> TestReport {
    let mut report = TestReport::default();
    let lines: Vec<&str> = output.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        if let Some((ok, name)) = tap_line(line) {
            if ok {
                report.pass(name);
            } else {
                let (failure, used) = tap_failure(name, &lines[i + 1..], cx);
                report.fail(failure);
                i += 1 + used;
                continue;
            }
        } else if let Some(name) = line.strip_prefix("✔ ") {
            report.pass(spec_name(name));
        } else if let Some(name) = line.strip_prefix("✖ ") {
            if !name.starts_with("failing tests") {
                let end = lines[i + 1..]
                    .iter()
                    .position(|l| {
                        let t = l.trim_start();
                        t.starts_with("✔ ")
                            || t.starts_with("✖ ")
                            || t.starts_with("ℹ ")
                            || t.starts_with("▶ ")
                    })
                    .map_or(lines.len(), |p| i + 1 + p);
                report.fail(spec_failure(spec_name(name), &lines[i + 1..end], cx));
                i = end;
                continue;
            }
        } else if let Some(n) = line
            .strip_prefix("# tests ")
            .or_else(|| line.strip_prefix("ℹ tests "))
        {
            report.collected = n.trim().parse().ok();
        } else if let Some(n) = line
            .strip_prefix("# pass ")
            .or_else(|| line.strip_prefix("ℹ pass "))
        {
            report.passed_count = report.passed_count.max(n.trim().parse().unwrap_or(0));
        }
        i += 1;
    }
    report
}

/// `ok 1 - name`, `not ok 2 - name`; `# SKIP` / `# TODO` directives are neither.
fn tap_line(line: &str) -> Option<(bool, String)> {
    let (ok, rest) = match line.strip_prefix("not ok ") {
        Some(rest) => (false, rest),
        None => (true, line.strip_prefix("ok ")?),
    };
    let (_, name) = rest.split_once(" - ")?;
    if name.contains(" # SKIP") || name.contains(" # TODO") {
        return None;
    }
    Some((ok, name.trim().to_owned()))
}

/// `adds (0.5ms)` -> `adds`.
fn spec_name(text: &str) -> String {
    let text = text.trim();
    match text.rsplit_once(" (") {
        Some((name, time)) if time.ends_with("ms)") || time.ends_with("s)") => name.to_owned(),
        _ => text.to_owned(),
    }
}

/// The YAML block after `not ok`: location, error, name. Returns the failure and how many
/// lines the block took.
fn tap_failure(name: String, rest: &[&str], cx: &ParseContext<'_>) -> (TestFailure, usize) {
    let mut failure = TestFailure::new(name, FailureCategory::Other, "");
    if rest.first().map(|l| l.trim()) != Some("---") {
        return (failure, 0);
    }
    let end = rest
        .iter()
        .skip(1)
        .position(|l| l.trim() == "...")
        .map_or(rest.len(), |p| p + 2);
    let block = &rest[1..end.saturating_sub(1).max(1)];
    let mut error = Vec::new();
    let mut j = 0;
    while j < block.len() {
        let l = block[j].trim();
        if let Some(loc) = l.strip_prefix("location: ") {
            if let Some((file, line)) = parse_location(loc.trim_matches('\''), cx.root) {
                failure.file = Some(file);
                failure.line = Some(line);
            }
        } else if let Some(v) = l.strip_prefix("error: ") {
            if v.starts_with('|') {
                let indent = block[j].len() - block[j].trim_start().len();
                let more = block[j + 1..]
                    .iter()
                    .take_while(|m| m.trim().is_empty() || m.len() - m.trim_start().len() > indent)
                    .count();
                error.extend(block[j + 1..j + 1 + more].iter().map(|m| m.trim()));
                j += more;
            } else {
                error.push(v.trim_matches(|c| c == '"' || c == '\''));
            }
        } else if let Some(v) = l.strip_prefix("name: ") {
            failure.class = class_of(v.trim_matches('\''));
        }
        j += 1;
    }
    failure.message = truncate(error.join("\n").trim(), MAX_MESSAGE_CHARS);
    (failure, end)
}

fn spec_failure(name: String, body: &[&str], cx: &ParseContext<'_>) -> TestFailure {
    let text: Vec<&str> = body
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    let mut failure = TestFailure::new(
        name,
        FailureCategory::Other,
        truncate(&text.join("\n"), MAX_MESSAGE_CHARS),
    );
    if let Some(first) = text.first() {
        failure.class = class_of(first.split([' ', ':', '[']).next().unwrap_or(""));
    }
    if let Some((file, line)) = text
        .iter()
        .filter_map(|l| find_location(l, cx.root))
        .find(|(f, _)| is_project_path(f, cx.root))
    {
        failure.file = Some(file);
        failure.line = Some(line);
    }
    failure
}

fn class_of(error_name: &str) -> FailureCategory {
    match error_name {
        "AssertionError" | "ERR_ASSERTION" => FailureCategory::Assertion,
        other => FailureCategory::from_error_name(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::parse::test_context as cx;

    const TAP: &str = "TAP version 13
# Subtest: adds
ok 1 - adds
  ---
  duration_ms: 2.591642
  ...
# Subtest: subtracts badly
not ok 2 - subtracts badly
  ---
  duration_ms: 2.725583
  location: '/sbx/work/math.test.js:4:1'
  failureType: 'testCodeFailure'
  error: |-
    Expected values to be strictly equal:
    
    2 !== 1
    
  code: 'ERR_ASSERTION'
  name: 'AssertionError'
  expected: 1
  ...
# Subtest: type issue
not ok 3 - type issue
  ---
  location: '/sbx/work/math.test.js:5:1'
  error: \"Cannot read properties of null (reading 'foo')\"
  code: 'ERR_TEST_FAILURE'
  name: 'TypeError'
  ...
1..3
# tests 3
# suites 0
# pass 1
# fail 2
";

    #[test]
    fn tap_output() {
        let report = parse(TAP, &cx(1));
        assert_eq!(report.collected, Some(3));
        assert_eq!(report.passed.iter().collect::<Vec<_>>(), ["adds"]);
        let f = &report.failures;
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].name, "subtracts badly");
        assert_eq!(f[0].class, FailureCategory::Assertion);
        assert_eq!(
            (f[0].file.as_deref(), f[0].line),
            (Some("math.test.js"), Some(4))
        );
        assert_eq!(
            f[0].message,
            "Expected values to be strictly equal:\n\n2 !== 1"
        );
        assert_eq!(f[1].class, FailureCategory::Type);
        assert_eq!(
            f[1].message,
            "Cannot read properties of null (reading 'foo')"
        );
    }

    #[test]
    fn spec_output() {
        let out = "✔ adds (0.51ms)\n✖ subtracts badly (1.1ms)\n  AssertionError [ERR_ASSERTION]: Expected values to be strictly equal:\n      at TestContext.<anonymous> (/sbx/work/math.test.js:4:40)\nℹ tests 2\nℹ pass 1\nℹ fail 1\n\n✖ failing tests:\n\n✖ subtracts badly (1.1ms)\n  AssertionError [ERR_ASSERTION]: Expected values\n";
        let report = parse(out, &cx(1));
        assert_eq!(report.collected, Some(2));
        assert_eq!(report.failures.len(), 1);
        let f = &report.failures[0];
        assert_eq!(f.class, FailureCategory::Assertion);
        assert_eq!((f.file.as_deref(), f.line), (Some("math.test.js"), Some(4)));
    }
}
