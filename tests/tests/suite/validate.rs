//! `coordinator validate` on a corpus of broken cascades, through the real
//! binary: exit code 2, every problem of a file reported in one run, and a
//! golden snapshot of what the user reads on stderr.
//!
//! The binary runs inside `tests/fixtures/`, so paths in messages are the
//! stable relative `invalid/NAME.yaml`. Hostile inputs (alias bombs, deep
//! nesting, huge files) are generated into a tempdir at test time.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn coordinator() -> Command {
    let mut cmd = Command::new(cascade_tests::binary("coordinator"));
    cmd.env_remove("CASCADE_SKILLS_DIR")
        .env_remove("CASCADE_INPUTS_FILE")
        .env_remove("RUST_LOG");
    cmd
}

/// One broken file: the extra flags it is validated with and a fragment of
/// each error it must produce (in any order, each exactly once per fragment).
struct Case {
    file: &'static str,
    args: &'static [&'static str],
    errors: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        file: "malformed-yaml.yaml",
        args: &[],
        errors: &["malformed-yaml.yaml:4:5: malformed YAML"],
    },
    Case {
        file: "wrong-types.yaml",
        args: &[],
        errors: &[
            "`cascade.name`: expected a string, found a list",
            "`cascade.inputs`: `inputs` must be a list or a mapping, found an integer",
            "`cascade.stages[0].dependencies`: expected a list of names, found a mapping",
            "`cascade.stages[0].max_iterations`: expected a whole number, found `many`",
            "`cascade.stages[0].memory_shared`: expected true or false, found `sometimes`",
            "`cascade.stages[1].skills`: expected a list of skills, found an integer",
            "`cascade.stages[1].swarm_config`: `swarm_config` must be a mapping, found a string",
        ],
    },
    Case {
        file: "unknown-field.yaml",
        args: &[],
        errors: &[
            "unknown field `descriptoin` in the `cascade` section, did you mean `description`?",
            "unknown field `dependecies` in a stage, did you mean `dependencies`?",
            "unknown field `modle` in a stage, did you mean `model`?",
            "unknown field `max_retires` in `error_handling`, did you mean `max_retries`?",
        ],
    },
    Case {
        file: "duplicate-keys.yaml",
        args: &[],
        errors: &["duplicate-keys.yaml:7:7: duplicate key `model` (first defined at line 6)"],
    },
    Case {
        file: "duplicate-stage-ids.yaml",
        args: &[],
        errors: &[
            "duplicate stage id `build` (first used at line 4)",
            "duplicate stage id `test` (first used at line 6)",
        ],
    },
    Case {
        file: "unknown-dependency.yaml",
        args: &[],
        errors: &[
            "`test.dependencies[0]`: unknown dependency `biuld`, did you mean `build`?",
            "`deploy.dependencies[1]`: unknown dependency `release-notes`",
        ],
    },
    Case {
        file: "cycle.yaml",
        args: &[],
        errors: &["dependency cycle: score -> review -> fix -> score"],
    },
    Case {
        file: "repeat.yaml",
        args: &[],
        errors: &[
            "repeat target `drfat` is not a stage of this list, did you mean `draft`?",
            "repeat target `side` must run before `judge`",
        ],
    },
    Case {
        file: "branch-without-condition.yaml",
        args: &[],
        errors: &[
            "branch `polish` has no condition and is not the default, so it can never run",
            "branch `rewrite` has no condition and is not the default, so it can never run",
        ],
    },
    Case {
        file: "map-branches-without-default.yaml",
        args: &[],
        errors: &["no branch has a condition and there is no `default`"],
    },
    Case {
        file: "bad-duration.yaml",
        args: &[],
        errors: &[
            "`cascade.timeout`: bad duration `5x`: unknown unit `x`",
            "`cascade.memory.retention`: bad duration `soon`",
            "`cascade.stages[0].timeout`: bad duration `1h30`: missing unit",
            "`cascade.stages[0].task_timeout`: expected a duration like `30s`, found a list",
            "`cascade.stages[0].error_handling.backoff.base`: bad duration `-1s`: must not be negative",
        ],
    },
    Case {
        file: "unknown-skill.yaml",
        args: &["--skills-dir", "skill-lib"],
        errors: &[
            "unknown skill `word-cuont`, did you mean `word-count`?",
            "unknown skill `ecko`, did you mean `echo`?",
            "`show.error_handling.fallback`: unknown skill `no-such-skill`",
        ],
    },
    Case {
        file: "template-references.yaml",
        args: &[],
        errors: &[
            "`${inputs.rpeo}`: undefined input `rpeo`, did you mean `repo`?",
            "`${fetsh.summary}`: unknown stage `fetsh`, did you mean `fetch`?",
            "`${cascade.nmae}`: the cascade has no field `nmae`, did you mean `name`?",
            "`report.condition`: `${reviewer.approved}`: unknown stage `reviewer`",
        ],
    },
    Case {
        file: "missing-required-input.yaml",
        args: &["--input", "other=1"],
        errors: &["missing required input `target` (pass --input target=VALUE)"],
    },
    Case {
        file: "subcascade-missing.yaml",
        args: &[],
        errors: &["sub-cascade `deep-quality-audit` not found"],
    },
    Case {
        file: "subcascade-cycle-a.yaml",
        args: &[],
        errors: &[
            "sub-cascades form a cycle: subcascade-cycle-a.yaml -> subcascade-cycle-b.yaml -> subcascade-cycle-a.yaml",
        ],
    },
    Case {
        file: "subcascade-cycle-b.yaml",
        args: &[],
        errors: &[
            "sub-cascades form a cycle: subcascade-cycle-b.yaml -> subcascade-cycle-a.yaml -> subcascade-cycle-b.yaml",
        ],
    },
    Case {
        file: "reserved-stage-id.yaml",
        args: &[],
        errors: &[
            "`inputs` is reserved for the context",
            "`memory` is reserved for the context",
            "stage id `2fast` must start with a letter",
        ],
    },
    Case {
        file: "empty.yaml",
        args: &[],
        errors: &["empty.yaml:1:1: the file is empty"],
    },
    Case {
        file: "non-mapping.yaml",
        args: &[],
        errors: &["a cascade must be a mapping, found a list"],
    },
    Case {
        file: "not-utf8.yaml",
        args: &[],
        errors: &["`invalid/not-utf8.yaml` is not UTF-8 text (invalid byte at offset 20)"],
    },
    Case {
        file: "numbered-list.yaml",
        args: &[],
        errors: &["stages are written as a numbered list"],
    },
    Case {
        file: "both-top-level-and-nested.yaml",
        args: &[],
        errors: &["`stages` is given both at the top level (line 7) and under `cascade:`"],
    },
    Case {
        file: "five-problems.yaml",
        args: &[],
        errors: &[
            "bad duration `forever`",
            "unknown value `retyr` (expected one of: retry, codex-auto-fix, model-switch, swarm-recovery, fail), did you mean `retry`?",
            "duplicate stage id `build`",
            "unknown dependency `biuld`",
            "`${deploy_stage.url}`: unknown stage `deploy_stage`",
        ],
    },
];

/// Runs `validate` in the fixtures dir; returns stderr.
fn validate_invalid(case: &Case) -> String {
    let out = coordinator()
        .current_dir(fixtures())
        .arg("validate")
        .arg(format!("invalid/{}", case.file))
        .args(case.args)
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8(out.stderr).expect("stderr is UTF-8");
    assert_eq!(out.status.code(), Some(2), "{}:\n{stderr}", case.file);
    assert!(out.stdout.is_empty(), "{}: data on stdout", case.file);
    stderr
}

#[test]
fn every_invalid_file_reports_every_problem_and_matches_its_snapshot() {
    for case in CASES {
        let stderr = validate_invalid(case);
        let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        for expected in case.errors {
            assert!(
                error_lines.iter().any(|l| l.contains(expected)),
                "{}: missing `{expected}` in:\n{stderr}",
                case.file
            );
        }
        assert_eq!(
            error_lines.len(),
            case.errors.len(),
            "{}: expected {} errors in one run:\n{stderr}",
            case.file,
            case.errors.len()
        );
        let summary = format!("invalid/{}: {} error", case.file, case.errors.len());
        assert!(
            stderr.contains(&summary),
            "{}: no summary line:\n{stderr}",
            case.file
        );
        let name = case.file.trim_end_matches(".yaml");
        insta::assert_snapshot!(name, stderr);
    }
}

#[test]
fn the_corpus_and_the_table_agree() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures().join("invalid"))
        .expect("the corpus exists")
        .map(|e| {
            e.expect("readable")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| c.file.to_owned()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "every corpus file has a case, and every case a file"
    );
}

#[test]
fn json_diagnostics_carry_location_field_and_message() {
    let out = coordinator()
        .current_dir(fixtures())
        .args(["validate", "--json", "invalid/five-problems.yaml"])
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["valid"], false);
    let file = &v["files"][0];
    assert_eq!(file["errors"], 5);
    let diags = file["diagnostics"].as_array().expect("a list");
    assert_eq!(diags.len(), 5);
    for d in diags {
        assert_eq!(d["severity"], "error");
        let loc = d["loc"].as_str().expect("every one has a location");
        assert!(loc.starts_with("invalid/five-problems.yaml:"), "{loc}");
        assert!(d["message"].is_string());
        assert!(d["field"].is_string());
    }
}

// ---- hostile input -------------------------------------------------------

/// Validates a file written into a tempdir; returns stderr with the tempdir
/// replaced by `[TMP]`.
fn validate_hostile(name: &str, contents: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("write");
    let out = coordinator()
        .arg("validate")
        .arg(&path)
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{name}:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{name}:\n{stderr}");
    let tmp = dir.path().display().to_string();
    stderr.replace(&tmp, "[TMP]")
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

#[test]
fn an_alias_bomb_is_refused() {
    let mut text = String::from(
        "cascade:\n  name: lol\n  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    let mut prev = 'a';
    for c in 'b'..='i' {
        let refs = vec![format!("*{prev}"); 9].join(", ");
        text.push_str(&format!("  {c}: &{c} [{refs}]\n"));
        prev = c;
    }
    let stderr = validate_hostile("bomb.yaml", text.as_bytes());
    assert!(
        stderr.contains("refusing it as a likely YAML bomb"),
        "{stderr}"
    );
    insta::assert_snapshot!("hostile__alias_bomb", first_line(&stderr));
}

#[test]
fn deep_flow_nesting_is_refused() {
    let text = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let stderr = validate_hostile("deep-flow.yaml", text.as_bytes());
    assert!(stderr.contains("nesting deeper than 64 levels"), "{stderr}");
    insta::assert_snapshot!("hostile__deep_flow", first_line(&stderr));
}

#[test]
fn deep_block_nesting_is_refused() {
    // `- - - x`: each `- ` opens a block sequence (indentation would make
    // 10,000 indented levels a 50 MB file, refused for its size instead).
    let text = format!("{}x\n", "- ".repeat(10_000));
    let stderr = validate_hostile("deep-block.yaml", text.as_bytes());
    assert!(stderr.contains("nesting deeper than 64 levels"), "{stderr}");
    insta::assert_snapshot!("hostile__deep_block", first_line(&stderr));
}

#[test]
fn a_50_mb_file_is_refused_before_parsing() {
    let mut text = String::from("cascade:\n  name: huge\n  description: |\n");
    let line = format!("    {}\n", "x".repeat(95));
    while text.len() < 50 * 1024 * 1024 {
        text.push_str(&line);
    }
    let stderr = validate_hostile("huge.yaml", text.as_bytes());
    assert!(stderr.contains("cascade files are limited to"), "{stderr}");
    insta::assert_snapshot!("hostile__huge_file", first_line(&stderr));
}
