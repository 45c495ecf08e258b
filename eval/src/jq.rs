//! Custom conditions: one jq filter, compiled with jaq (core + std + json definitions) and run
//! in-process on the context JSON. Never a shell.
//!
//! Accepted scripts: a bare filter (`.metrics.error_rate < 0.01`) or a jq command line with
//! one shell-quoted filter (`jq '<f>'`, `jq -e "<f>"`). The quoting is undone here, following
//! shell word rules; anything a shell would interpret (pipes after the word, `;`, `&&`,
//! `$VAR` expansion, extra arguments) is rejected, not evaluated.
//!
//! Purity: `env`, `now`, `localtime`, `strflocaltime`, `halt`, `input(s)` and the logging
//! natives are replaced by stubs that fail or do nothing. Only the first output is taken;
//! jq truthiness applies (false and null are false, no output is false).
//!
//! Termination: jaq has no step budget, so what can run without end is refused before
//! compiling: definitions (`def`, the only way to write recursion) and the unbounded
//! generators ([`UNBOUNDED`]: `repeat`, `range`, `while`, `until`, `recurse(f)`,
//! `combinations`), and `*` (`"x" * 4000000000` repeats a string: an allocation failure
//! aborts the process). What is left walks the context, whose size is bounded. A panic
//! inside jaq is an error of the filter, not of the process. Still not bounded: filters
//! whose outputs or values multiply (`try (.. - .. - .. - ..)`, `[(.,.)|(.,.)|...]`,
//! `reduce .xs[] as $x (.; [., .]) | tojson` over a long list) — a real budget needs a step
//! counter inside jaq (`fuzz/open/README.md`).

use std::fmt;
use std::sync::Arc;

use jaq_core::box_iter::box_once;
use jaq_core::load::{Arena, File, Loader};
use jaq_core::native::{Fun, run, v};
use jaq_core::{Compiler, Ctx, Error, Exn, Native, ValT, Vars, data};
use jaq_json::Val;

use crate::context::Context;
use crate::error::EvalError;

type Data = data::JustLut<Val>;
type Compiled = jaq_core::compile::Filter<Native<Data>>;

/// Bracket nesting allowed in a filter; jaq's parser recurses.
const MAX_NESTING: usize = 64;

const SHELL_SYNTAX: &str = "custom conditions take one jq filter; shell syntax is not evaluated";

/// Generators that can run without end, refused in conditions (`recurse` only with an
/// argument: plain `recurse`, like `..`, walks the input and stops).
const UNBOUNDED: [&str; 5] = ["repeat", "range", "while", "until", "combinations"];

/// A compiled jq filter.
#[derive(Clone)]
pub struct JqFilter {
    filter: String,
    compiled: Arc<Compiled>,
}

impl fmt::Debug for JqFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JqFilter")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl PartialEq for JqFilter {
    fn eq(&self, other: &Self) -> bool {
        self.filter == other.filter
    }
}

impl JqFilter {
    /// Unwraps `script` (see the module doc) and compiles the filter.
    pub fn parse(script: &str) -> Result<JqFilter, EvalError> {
        let filter = unwrap_script(script)?;
        let compiled = compile(&filter)?;
        Ok(JqFilter {
            filter,
            compiled: Arc::new(compiled),
        })
    }

    /// The filter after unwrapping.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// Runs the filter on the context and returns the jq truthiness of its first output.
    pub fn evaluate(&self, ctx: &Context) -> Result<bool, EvalError> {
        let err = |message: String| EvalError::Jq {
            filter: self.filter.clone(),
            message,
        };
        let bytes = serde_json::to_vec(ctx.as_json()).map_err(|e| err(e.to_string()))?;
        let input = jaq_json::read::parse_single(&bytes).map_err(|e| err(e.to_string()))?;
        let jq_ctx = Ctx::<Data>::new(&self.compiled.lut, Vars::new([]));
        // jaq panicked on `"ab" * 9223372036854775807` (capacity overflow) before `*` was
        // refused; whatever else it panics on is this filter's failure, not the caller's.
        let run = std::panic::AssertUnwindSafe(|| self.compiled.id.run((jq_ctx, input)).next());
        let first = std::panic::catch_unwind(run)
            .map_err(|_| err("the filter failed inside jq (panicked)".to_owned()))?;
        match first {
            None => Ok(false),
            Some(Ok(v)) => Ok(v.as_bool()),
            Some(Err(exn)) => match exn.get_err() {
                Ok(e) => Err(err(e.to_string())),
                Err(_) => Err(err("the filter halted".to_owned())),
            },
        }
    }
}

fn jq_err(filter: &str, message: impl Into<String>) -> EvalError {
    EvalError::Jq {
        filter: filter.to_owned(),
        message: message.into(),
    }
}

/// Natives that would read the environment or the clock, halt the process or log.
const IMPURE: [&str; 8] = [
    "env",
    "now",
    "localtime",
    "strflocaltime",
    "halt",
    "debug_empty",
    "stderr_empty",
    "input",
];

fn stubs() -> impl Iterator<Item = Fun<Data>> {
    let unavailable: [(&'static str, usize); 5] = [
        ("env", 0),
        ("now", 0),
        ("localtime", 0),
        ("strflocaltime", 1),
        ("halt", 1),
    ];
    let failing = unavailable.into_iter().map(|(name, arity)| {
        run::<Data>((name, v(arity), |_| {
            box_once(Err(Exn::from(Error::str(
                "not available in conditions (no environment, clock or exit)",
            ))))
        }))
    });
    let silent = ["debug_empty", "stderr_empty"]
        .into_iter()
        .map(|name| run::<Data>((name, v(0), |_| Box::new(core::iter::empty()))));
    failing.chain(silent)
}

fn compile(filter: &str) -> Result<Compiled, EvalError> {
    check_nesting(filter)?;
    check_terminates(filter)?;
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs::<Data>()
        .chain(jaq_std::funs::<Data>().filter(|(name, ..)| !IMPURE.contains(name)))
        .chain(jaq_json::funs::<Data>())
        .chain(stubs());
    let arena = Arena::default();
    let modules = Loader::new(defs)
        .load(
            &arena,
            File {
                code: filter,
                path: (),
            },
        )
        .map_err(|errs| jq_err(filter, describe_load_errors(filter, errs)))?;
    Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errs| {
            let names: Vec<String> = errs
                .into_iter()
                .flat_map(|(_, undefined)| undefined)
                .map(|(name, kind)| format!("undefined {} `{name}`", kind.as_str()))
                .collect();
            jq_err(filter, names.join("; "))
        })
}

fn check_nesting(filter: &str) -> Result<(), EvalError> {
    let mut depth = 0usize;
    for c in filter.chars() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_NESTING {
            return Err(jq_err(
                filter,
                format!("nests deeper than {MAX_NESTING} levels"),
            ));
        }
    }
    Ok(())
}

/// Refuses what could run without end (see the module doc): `def` and the [`UNBOUNDED`]
/// generators, found among the filter's words (keys such as `.range` are not words). A
/// filter that does not lex is left to the compiler's messages.
fn check_terminates(filter: &str) -> Result<(), EvalError> {
    use jaq_core::load::lex::{StrPart, Tok, Token};
    fn walk<'a>(tokens: &'a [Token<&'a str>], found: &mut Option<&'a str>) {
        for (i, Token(s, tok)) in tokens.iter().enumerate() {
            match tok {
                Tok::Word => {
                    let called = matches!(tokens.get(i + 1), Some(Token(n, Tok::Block(_))) if n.starts_with('('));
                    let word = *s;
                    if word == "def" || UNBOUNDED.contains(&word) || (word == "recurse" && called) {
                        found.get_or_insert(word);
                    }
                }
                // `"ab" * 922337203685477` asks for petabytes: an allocation failure aborts
                // the process (not a panic). Multiplication is the one operator whose result
                // can outgrow its operands without bound.
                Tok::Sym if s.starts_with('*') => {
                    found.get_or_insert("*");
                }
                Tok::Block(inner) => walk(inner, found),
                Tok::Str(parts) => {
                    for part in parts {
                        if let StrPart::Term(t) = part {
                            walk(std::slice::from_ref(t), found);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let Ok(tokens) = jaq_core::load::Lexer::new(filter).lex() else {
        return Ok(());
    };
    let mut found = None;
    walk(&tokens, &mut found);
    match found {
        None => Ok(()),
        Some("def") => Err(jq_err(
            filter,
            "`def` is not allowed in conditions: a definition can recurse without end",
        )),
        Some("*") => Err(jq_err(
            filter,
            "`*` is not allowed in conditions: repeating a string can exhaust memory \
             (compare with `/` instead: `.a / 2 > .b`)",
        )),
        Some(word) => Err(jq_err(
            filter,
            format!("`{word}` is not allowed in conditions: it can run without end"),
        )),
    }
}

/// Byte offset of `part` inside `whole`, if it is a slice of it.
fn offset_in(whole: &str, part: &str) -> Option<usize> {
    let offset = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (offset <= whole.len()).then_some(offset)
}

fn describe_load_errors(filter: &str, errs: jaq_core::load::Errors<&str, ()>) -> String {
    use jaq_core::load::Error as LoadError;
    use jaq_core::load::lex::Expect as Lex;
    let at = |got: &str| match offset_in(filter, got) {
        Some(o) => format!(" at byte {o}"),
        None => String::new(),
    };
    let mut out = Vec::new();
    for (_, err) in errs {
        match err {
            LoadError::Io(items) => out.extend(items.into_iter().map(|(path, e)| {
                format!("cannot import `{path}`: {e} (modules are not available)")
            })),
            LoadError::Lex(items) => out.extend(items.into_iter().map(|(expect, got)| {
                let want = match expect {
                    Lex::Delim(d) => format!("a delimiter closing `{d}`"),
                    Lex::Digit => "a digit".to_owned(),
                    Lex::Ident => "an identifier".to_owned(),
                    Lex::Escape => "a string escape sequence".to_owned(),
                    Lex::Unicode => "a 4-digit hexadecimal code point".to_owned(),
                    _ => "a token".to_owned(),
                };
                format!("expected {want}{}", at(got))
            })),
            LoadError::Parse(items) => out.extend(
                items
                    .into_iter()
                    .map(|(expect, got)| format!("expected {}{}", expect.as_str(), at(got))),
            ),
        }
    }
    if out.is_empty() {
        "does not parse".to_owned()
    } else {
        out.join("; ")
    }
}

/// Strips a `jq [flags] '<filter>'` command line down to the filter (see the module doc).
fn unwrap_script(script: &str) -> Result<String, EvalError> {
    let s = script.trim();
    let Some(args) = s
        .strip_prefix("jq")
        .filter(|a| a.is_empty() || a.starts_with(char::is_whitespace))
    else {
        if s.is_empty() {
            return Err(jq_err(script, "empty script"));
        }
        return Ok(s.to_owned());
    };
    let mut rest = args.trim_start();
    while rest.starts_with('-') {
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let flag = &rest[..end];
        let known_long = [
            "--exit-status",
            "--raw-output",
            "--compact-output",
            "--monochrome-output",
        ];
        let known_short = flag.len() > 1
            && !flag.starts_with("--")
            && flag[1..].chars().all(|c| "ercMj".contains(c));
        if !(known_short || known_long.contains(&flag)) {
            return Err(jq_err(
                script,
                format!("jq option `{flag}` is not supported in conditions"),
            ));
        }
        rest = rest[end..].trim_start();
    }
    let (word, after) = shell_word(rest).map_err(|e| jq_err(script, e.to_string()))?;
    if !after.trim().is_empty() {
        return Err(jq_err(script, SHELL_SYNTAX));
    }
    if word.trim().is_empty() {
        return Err(jq_err(script, "no filter after `jq`"));
    }
    Ok(word)
}

/// Why the one shell word of a `jq '...'` script does not read.
#[derive(Debug, thiserror::Error)]
enum ShellWordError {
    #[error("unterminated single quote")]
    UnterminatedSingleQuote,
    #[error("unterminated double quote")]
    UnterminatedDoubleQuote,
    #[error("{}", SHELL_SYNTAX)]
    Syntax,
    #[error("trailing backslash")]
    TrailingBackslash,
}

/// One shell word made of adjacent '...', "..." and unquoted pieces; returns the word and what
/// follows it. `$` expansion and shell metacharacters are refused.
fn shell_word(s: &str) -> Result<(String, &str), ShellWordError> {
    let mut out = String::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            '\'' => {
                chars.next();
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, ch)) => out.push(ch),
                        None => return Err(ShellWordError::UnterminatedSingleQuote),
                    }
                }
            }
            '"' => {
                chars.next();
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, e @ ('"' | '\\' | '$' | '`'))) => out.push(e),
                            Some((_, other)) => {
                                out.push('\\');
                                out.push(other);
                            }
                            None => return Err(ShellWordError::UnterminatedDoubleQuote),
                        },
                        Some((_, '$' | '`')) => return Err(ShellWordError::Syntax),
                        Some((_, ch)) => out.push(ch),
                        None => return Err(ShellWordError::UnterminatedDoubleQuote),
                    }
                }
            }
            c if c.is_whitespace() || "|;&<>()".contains(c) => return Ok((out, &s[i..])),
            '$' | '`' => return Err(ShellWordError::Syntax),
            '\\' => {
                chars.next();
                match chars.next() {
                    Some((_, e)) => out.push(e),
                    None => return Err(ShellWordError::TrailingBackslash),
                }
            }
            _ => {
                chars.next();
                out.push(c);
            }
        }
    }
    Ok((out, ""))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx() -> Context {
        let mut ctx = Context::new(json!({"n": 3}), json!({}), json!({"name": "c"}));
        ctx.set_stage_output("metrics", json!({"error_rate": 0.001, "tags": ["a", "b"]}));
        ctx
    }

    #[test]
    fn unwrap_table() {
        let cases = [
            (".a < 1", ".a < 1"),
            (
                "jq '.metrics.error_rate < 0.01'",
                ".metrics.error_rate < 0.01",
            ),
            ("jq -e '.x'", ".x"),
            ("  jq -er \".x | length > 0\"  ", ".x | length > 0"),
            ("jq \"has(\\\"a\\\")\"", "has(\"a\")"),
            ("jq '.a'\\''b'", ".a'b"),
            ("jq .a", ".a"),
            ("jqx", "jqx"),
        ];
        for (script, want) in cases {
            assert_eq!(unwrap_script(script), Ok(want.to_owned()), "{script}");
        }
        for bad in [
            "jq '.a' | grep x",
            "jq '.a'; rm -rf /",
            "jq '.a' && echo",
            "jq '.a' file.json",
            "jq \"$HOME\"",
            "jq -n '.a'",
            "jq '.a",
            "jq",
            "",
        ] {
            assert!(unwrap_script(bad).is_err(), "{bad}");
        }
        let msg = unwrap_script("jq '.a' | cat")
            .expect_err("should fail")
            .to_string();
        assert!(msg.contains(SHELL_SYNTAX), "{msg}");
    }

    #[test]
    fn evaluation_table() {
        let cases = [
            ("jq '.metrics.error_rate < 0.01'", true),
            (".metrics.error_rate > 0.01", false),
            (".inputs.n", true),
            (".missing", false),
            ("empty", false),
            ("false, true", false),
            (
                ".metrics.tags | map(ascii_upcase) | index(\"B\") == 1",
                true,
            ),
            (".metrics.tags | any(test(\"^b\"))", true),
            ("[.metrics.tags[] | select(. == \"a\")] | length == 1", true),
            ("env | length > 0", false),
        ];
        for (script, want) in cases {
            let filter = JqFilter::parse(script).expect(script);
            let got = filter.evaluate(&ctx());
            if script.starts_with("env") {
                assert!(got.is_err(), "env must not read the environment");
                continue;
            }
            assert_eq!(got, Ok(want), "{script}");
        }
    }

    /// Found with the `jq` fuzz target (`fuzz/`): each of these hung, overflowed the stack,
    /// panicked or exhausted memory; now each is refused.
    #[test]
    fn what_could_run_without_end_is_refused() {
        for bad in [
            "def f: 1 + f; f",
            "def f: [f]; f",
            "last(repeat(1))",
            "[limit(100000000; repeat(1))] | length",
            "last(range(1e10))",
            "[range(0; 1e9; 1)] | length",
            "last(recurse(. + 1))",
            "first(until(false; .))",
            "[while(true; .)] | length",
            ".inputs | combinations",
            "\"\\(repeat(1))\"",
            "jq '[.[] | range(10)]'",
            "\"ab\" * 922337203685477 < 5807",
            "\"ab\" * 9223372036854775807",
            ".inputs.n *= 2",
        ] {
            let err = JqFilter::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("not allowed in conditions"), "{bad}: {err}");
        }
        // Keys named like the refused words, and plain `recurse`, still work.
        for ok in [
            ".metrics.range == null",
            ".def == null",
            "[recurse] | length > 3",
        ] {
            let filter = JqFilter::parse(ok).expect(ok);
            assert_eq!(filter.evaluate(&ctx()), Ok(true), "{ok}");
        }
    }

    #[test]
    fn compile_and_runtime_errors() {
        for bad in [
            ".a |",
            "nosuchfn",
            ".a[",
            "$x",
            "import \"m\" as m; .",
            "((((",
        ] {
            assert!(JqFilter::parse(bad).is_err(), "{bad}");
        }
        let msg = JqFilter::parse("nosuchfn")
            .expect_err("should fail")
            .to_string();
        assert_eq!(msg, "jq filter `nosuchfn`: undefined filter `nosuchfn`");
        let runtime = JqFilter::parse("error(\"boom\")")
            .expect("compiles")
            .evaluate(&ctx());
        assert!(matches!(runtime, Err(EvalError::Jq { .. })), "{runtime:?}");
        let halt = JqFilter::parse("halt").expect("compiles").evaluate(&ctx());
        assert!(halt.is_err());
        assert!(JqFilter::parse(&"(".repeat(100)).is_err());
        assert!(
            JqFilter::parse("now")
                .expect("compiles")
                .evaluate(&ctx())
                .is_err()
        );
    }
}
