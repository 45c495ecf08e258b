//! `cargo test` (libtest's default format) and rustc's diagnostics.
//!
//! ```text
//! running 3 tests                                   -> collected += 3
//! test tests::doubles ... ok                        -> passed
//! test tests::sums ... FAILED                       -> failed
//! ---- tests::sums stdout ----                      -> the panic of that test:
//! thread 'tests::sums' (3309) panicked at src/lib.rs:24:9:
//! assertion `left == right` failed                  -> message, file, line
//! error[E0277]: cannot add `&str` to `u32`          -> a compile failure,
//!  --> src/lib.rs:5:25                                 located by the next ` --> `
//! ```

use super::{MAX_MESSAGE_CHARS, ParseContext, parse_location, truncate};
use crate::sandbox::report::{FailureCategory, TestFailure, TestReport};

pub fn parse(output: &str, cx: &ParseContext<'_>) -> TestReport {
    let mut report = TestReport::default();
    let lines: Vec<&str> = output.lines().collect();
    let mut collected: Option<u32> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(n) = line
            .strip_prefix("running ")
            .and_then(|r| r.strip_suffix(" tests").or_else(|| r.strip_suffix(" test")))
        {
            if let Ok(n) = n.trim().parse::<u32>() {
                collected = Some(collected.unwrap_or(0).saturating_add(n));
            }
        } else if let Some((name, result)) = test_line(line) {
            match result {
                "ok" => report.pass(name),
                "FAILED" => report.fail(TestFailure::new(name, FailureCategory::Other, "")),
                _ => {}
            }
        } else if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|r| r.strip_suffix(" stdout ----"))
        {
            let end = lines[i + 1..]
                .iter()
                .position(|l| {
                    l.starts_with("---- ") || *l == "failures:" || l.starts_with("test result:")
                })
                .map_or(lines.len(), |p| i + 1 + p);
            let failure = panic_failure(name, &lines[i + 1..end], cx);
            report.fail(failure);
            i = end;
            continue;
        } else if is_compile_error(line) {
            let (failure, used) = compile_failure(&lines[i..], cx);
            report.fail(failure);
            i += used.max(1);
            continue;
        }
        i += 1;
    }
    report.collected = collected;
    report
}

/// `test NAME ... RESULT`; `NAME` may carry ` - should panic`.
fn test_line(line: &str) -> Option<(String, &str)> {
    let rest = line.strip_prefix("test ")?;
    let (name, result) = rest.rsplit_once(" ... ")?;
    let result = result.split_whitespace().next()?;
    let name = name.strip_suffix(" - should panic").unwrap_or(name);
    Some((name.trim().to_owned(), result))
}

/// The section a failed test printed: its panic message and location.
fn panic_failure(name: &str, section: &[&str], cx: &ParseContext<'_>) -> TestFailure {
    let mut failure = TestFailure::new(name, FailureCategory::Other, "");
    let Some(at) = section
        .iter()
        .position(|l| l.starts_with("thread '") && l.contains("panicked at "))
    else {
        let text: Vec<&str> = section
            .iter()
            .copied()
            .filter(|l| !l.trim().is_empty())
            .collect();
        failure.message = truncate(&text.join("\n"), MAX_MESSAGE_CHARS);
        return failure;
    };
    let head = section[at];
    let after = head.split_once("panicked at ").map_or("", |(_, r)| r);
    let mut message_lines: Vec<&str> = Vec::new();
    if let Some(quoted) = after.strip_prefix('\'') {
        // Before Rust 1.73: `panicked at 'message', src/lib.rs:5:9`.
        if let Some((msg, loc)) = quoted.rsplit_once("', ") {
            message_lines.push(msg);
            locate(&mut failure, loc, cx);
        }
    } else {
        locate(&mut failure, after.trim_end_matches(':'), cx);
        message_lines.extend(section[at + 1..].iter().copied().take_while(|l| {
            !l.starts_with("note: ") && !l.starts_with("stack backtrace:") && !l.trim().is_empty()
        }));
    }
    let message = message_lines.join("\n");
    failure.class = if message.starts_with("assertion") || message.contains("assert") {
        FailureCategory::Assertion
    } else {
        FailureCategory::Other
    };
    failure.message = truncate(&message, MAX_MESSAGE_CHARS);
    failure
}

fn locate(failure: &mut TestFailure, text: &str, cx: &ParseContext<'_>) {
    if let Some((file, line)) = parse_location(text, cx.root) {
        failure.file = Some(file);
        failure.line = Some(line);
    }
}

/// `error[E0277]: ...` or `error: ...` from rustc; cargo's own `error: test failed` and
/// `error: could not compile` lines are summaries, not errors of their own.
fn is_compile_error(line: &str) -> bool {
    if line.starts_with("error[E") {
        return true;
    }
    let Some(rest) = line.strip_prefix("error: ") else {
        return false;
    };
    !(rest.starts_with("test failed")
        || rest.starts_with("could not compile")
        || rest.starts_with("aborting due to")
        || rest.starts_with("failed to run")
        || rest.starts_with("build failed")
        || rest.starts_with("process didn't exit"))
}

/// One diagnostic: its header, the ` --> file:line:col` below it and the snippet, up to the
/// next blank line. Returns the failure and how many lines it took.
fn compile_failure(lines: &[&str], cx: &ParseContext<'_>) -> (TestFailure, usize) {
    let header = lines[0].trim();
    let end = lines
        .iter()
        .skip(1)
        .position(|l| l.trim().is_empty())
        .map_or(lines.len(), |p| p + 1);
    let body = &lines[..end];
    let location = body
        .iter()
        .find_map(|l| l.trim_start().strip_prefix("--> "))
        .and_then(|loc| parse_location(loc, cx.root));
    let name = match &location {
        Some((file, line)) => format!("{file}:{line}: {header}"),
        None => header.to_owned(),
    };
    let mut failure = TestFailure::new(
        name,
        FailureCategory::Compile,
        truncate(&body.join("\n"), MAX_MESSAGE_CHARS),
    );
    if let Some((file, line)) = location {
        failure.file = Some(file);
        failure.line = Some(line);
    }
    (failure, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::parse::test_context as cx;

    const FAILING: &str = "   Compiling offbyone v0.1.0 (/sbx/work)
    Finished `test` profile [unoptimized + debuginfo] target(s) in 0.33s
     Running unittests src/lib.rs (/sbx/target/debug/deps/offbyone-20c3072f2888be92)

running 3 tests
test tests::doubles ... ok
test tests::a_partial_page_counts ... FAILED
test tests::sums_up_to_and_including_n ... FAILED

failures:

---- tests::a_partial_page_counts stdout ----

thread 'tests::a_partial_page_counts' (3307) panicked at src/lib.rs:29:9:
assertion `left == right` failed
  left: 2
 right: 3
stack backtrace:
   0: __rustc::rust_begin_unwind
             at /rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/std/src/panicking.rs:689:5
note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.

---- tests::sums_up_to_and_including_n stdout ----

thread 'tests::sums_up_to_and_including_n' (3309) panicked at src/lib.rs:24:9:
assertion `left == right` failed
  left: 6
 right: 10
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace


failures:
    tests::a_partial_page_counts
    tests::sums_up_to_and_including_n

test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.12s

error: test failed, to rerun pass `--lib`
";

    const COMPILE: &str = "   Compiling offbyone v0.1.0 (/sbx/work)
error[E0277]: cannot add `&str` to `u32`
 --> src/lib.rs:5:25
  |
5 |     (1..n).sum::<u32>() + \"x\"
  |                         ^ no implementation for `u32 + &str`

For more information about this error, try `rustc --explain E0277`.
error: could not compile `offbyone` (lib) due to 1 previous error
warning: build failed, waiting for other jobs to finish...
error[E0277]: cannot add `&str` to `u32`
 --> src/lib.rs:5:25
  |
5 |     (1..n).sum::<u32>() + \"x\"

error: could not compile `offbyone` (lib test) due to 1 previous error
";

    #[test]
    fn failing_tests() {
        let report = parse(FAILING, &cx(101));
        assert_eq!(report.collected, Some(3));
        assert_eq!(report.passed.iter().collect::<Vec<_>>(), ["tests::doubles"]);
        assert_eq!(report.failures.len(), 2);
        let f = &report.failures[0];
        assert_eq!(f.name, "tests::a_partial_page_counts");
        assert_eq!(f.class, FailureCategory::Assertion);
        assert_eq!((f.file.as_deref(), f.line), (Some("src/lib.rs"), Some(29)));
        assert_eq!(
            f.message,
            "assertion `left == right` failed\n  left: 2\n right: 3"
        );
        assert_eq!(report.failures[1].line, Some(24));
    }

    #[test]
    fn compile_errors_once_each() {
        let report = parse(COMPILE, &cx(101));
        assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
        let f = &report.failures[0];
        assert_eq!(
            f.name,
            "src/lib.rs:5: error[E0277]: cannot add `&str` to `u32`"
        );
        assert_eq!(f.class, FailureCategory::Compile);
        assert_eq!((f.file.as_deref(), f.line), (Some("src/lib.rs"), Some(5)));
        assert!(f.message.contains("no implementation for"));
        assert_eq!(report.collected, None);
        assert!(!report.ran_no_tests());
    }

    #[test]
    fn zero_tests_and_old_panics() {
        let none = parse(
            "running 0 tests\n\ntest result: ok. 0 passed; 0 failed\n",
            &cx(0),
        );
        assert_eq!(none.collected, Some(0));
        assert!(none.ran_no_tests());

        let old = "running 1 test\ntest t ... FAILED\n\n---- t stdout ----\nthread 't' panicked at 'called `Option::unwrap()` on a `None` value', src/main.rs:3:5\n\nfailures:\n";
        let report = parse(old, &cx(101));
        let f = &report.failures[0];
        assert_eq!(f.message, "called `Option::unwrap()` on a `None` value");
        assert_eq!(f.class, FailureCategory::Other);
        assert_eq!(f.line, Some(3));
    }

    #[test]
    fn should_panic_and_ignored() {
        let out =
            "running 3 tests\ntest a - should panic ... ok\ntest b ... ignored\ntest c ... ok\n";
        let report = parse(out, &cx(0));
        assert_eq!(report.passed.iter().collect::<Vec<_>>(), ["a", "c"]);
        assert!(report.failures.is_empty());
    }
}
