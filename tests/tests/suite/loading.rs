//! Loading skill directories: real files in temporary directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cascade_exec::skills::Builtin;
use cascade_exec::{BUILTIN_SKILLS, SkillDef, SkillKind, SkillLoadError, SkillRegistry};

fn write(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    fs::write(&path, text).expect("write skill file");
    path
}

fn load_err(dirs: &[PathBuf]) -> Vec<String> {
    match SkillRegistry::load(dirs) {
        Ok(r) => panic!(
            "expected errors, loaded {:?}",
            r.names().collect::<Vec<_>>()
        ),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn builtins_are_always_there() {
    let r = SkillRegistry::builtins();
    assert_eq!(r.names().collect::<Vec<_>>(), BUILTIN_SKILLS);
    assert!(r.contains("noop"));
    assert_eq!(
        r.get("sleep").map(|s| &s.kind),
        Some(&SkillKind::Builtin(Builtin::Sleep))
    );
    assert!(r.get("nope").is_none());
    let empty = SkillRegistry::load(&[]).expect("no dirs is fine");
    assert_eq!(empty.names().count(), BUILTIN_SKILLS.len());
}

#[test]
fn names_default_to_the_file_stem_and_other_files_are_ignored() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "lint.yaml",
        "description: lints\nrun: echo lint\n",
    );
    write(
        dir.path(),
        "b.yml",
        "name: build\ncommand: [make, all]\ntimeout: 5m\n",
    );
    write(
        dir.path(),
        "c.json",
        "{\"command\": [\"true\"], \"timeout\": 30}",
    );
    write(dir.path(), "README.md", "not a skill: [");
    write(dir.path(), "notes.txt", "rnu: x");
    fs::create_dir(dir.path().join("nested.yaml")).expect("mkdir");
    fs::create_dir(dir.path().join("sub")).expect("mkdir");
    write(&dir.path().join("sub"), "deep.yaml", "run: echo deep\n");

    let r = SkillRegistry::load(&[dir.path().to_owned()]).expect("loads");
    let names: Vec<&str> = r.names().collect();
    assert_eq!(
        names,
        [
            "build",
            "c",
            "codex-sandbox",
            "echo",
            "fail",
            "judge",
            "lint",
            "noop",
            "sleep"
        ]
    );

    let lint = r.get("lint").expect("lint");
    assert_eq!(
        lint.kind,
        SkillKind::Shell {
            run: "echo lint".into()
        }
    );
    assert_eq!(lint.description.as_deref(), Some("lints"));
    let source = lint.source.as_deref().expect("file skill has a source");
    assert!(source.is_absolute());
    assert_eq!(
        lint.dir(),
        Some(fs::canonicalize(dir.path()).expect("canon").as_path())
    );

    let build = r.get("build").expect("build");
    assert_eq!(
        build.kind,
        SkillKind::Command {
            argv: vec!["make".into(), "all".into()]
        }
    );
    assert_eq!(build.timeout, Some(Duration::from_secs(300)));
    assert_eq!(
        r.get("c").and_then(|c| c.timeout),
        Some(Duration::from_secs(30))
    );
}

#[test]
fn every_field_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "full.yaml",
        "name: full\ndescription: everything\nrun: ./go.sh\ntimeout: 500ms\n\
         env:\n  MODE: fast\n  LEVEL: \"3\"\n\
         inputs:\n  path: the file to read\n  depth: {type: int}\n\
         outputs: [report, score]\n",
    );
    write(dir.path(), "listed.yaml", "run: x\ninputs: [a, b]\n");
    let r = SkillRegistry::load(&[dir.path().to_owned()]).expect("loads");
    let full = r.get("full").expect("full");
    assert_eq!(full.timeout, Some(Duration::from_millis(500)));
    assert_eq!(full.env.get("MODE").map(String::as_str), Some("fast"));
    assert_eq!(full.env.get("LEVEL").map(String::as_str), Some("3"));
    assert_eq!(full.inputs, ["path", "depth"]);
    assert_eq!(full.outputs, ["report", "score"]);
    assert_eq!(r.get("listed").expect("listed").inputs, ["a", "b"]);
}

#[test]
fn all_errors_are_reported_at_once_with_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write(dir.path(), "a.yaml", "description: x\nrnu: echo hi\n");
    let b = write(dir.path(), "b.yaml", "run: echo\ntimeout: 5 parsecs\n");
    let c = write(dir.path(), "c.yaml", "run: echo\nenv:\n  - A\n");
    write(dir.path(), "ok.yaml", "run: echo ok\n");
    let errors = load_err(&[dir.path().to_owned()]);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert_eq!(
        errors[0],
        format!(
            "{}:2:1: unknown field `rnu`, did you mean `run`?",
            a.display()
        )
    );
    assert!(
        errors[1].starts_with(&format!(
            "{}:2:10: field `timeout`: bad duration `5 parsecs`: unknown unit `parsecs`",
            b.display()
        )),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].starts_with(&format!("{}:3:", c.display())),
        "{}",
        errors[2]
    );
    assert!(errors[2].contains("field `env`"), "{}", errors[2]);
}

#[test]
fn unknown_field_without_a_close_match_lists_the_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "x.json", "{\"run\": \"echo\",\n \"zzzzzz\": 1}");
    let errors = load_err(&[dir.path().to_owned()]);
    assert!(errors[0].contains("x.json:2:2: unknown field `zzzzzz`, expected one of: name,"));
}

#[test]
fn bad_durations_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, t) in ["-1", "0", "2x", "soon", "[1]"].iter().enumerate() {
        write(
            dir.path(),
            &format!("t{i}.yaml"),
            &format!("run: x\ntimeout: {t}\n"),
        );
    }
    let errors = load_err(&[dir.path().to_owned()]);
    assert_eq!(errors.len(), 5, "{errors:#?}");
    for e in &errors {
        assert!(e.contains(":2:") && e.contains(": field `timeout`"), "{e}");
    }
}

#[test]
fn run_and_command_are_exclusive_and_one_is_required() {
    let dir = tempfile::tempdir().expect("tempdir");
    let both = write(dir.path(), "both.yaml", "run: echo\ncommand: [echo]\n");
    let neither = write(dir.path(), "neither.yaml", "description: nothing to run\n");
    let empty = write(dir.path(), "empty.yaml", "command: []\n");
    let errors = load_err(&[dir.path().to_owned()]);
    assert_eq!(
        errors,
        [
            format!(
                "{}:2:10: fields `run` and `command` are exclusive: give only one",
                both.display()
            ),
            format!(
                "{}:1:10: field `command`: must name a program",
                empty.display()
            ),
            format!(
                "{}: missing field `run`, `command` or `prompt`: give exactly one",
                neither.display()
            ),
        ]
    );
}

#[test]
fn duplicate_names_name_both_files() {
    let one = tempfile::tempdir().expect("tempdir");
    let two = tempfile::tempdir().expect("tempdir");
    let first = write(one.path(), "deploy.yaml", "run: echo 1\n");
    let second = write(two.path(), "other.yml", "name: deploy\nrun: echo 2\n");
    let errors = SkillRegistry::load(&[one.path().to_owned(), two.path().to_owned()])
        .expect_err("duplicate");
    assert_eq!(errors.len(), 1);
    assert!(
        matches!(&errors[0], SkillLoadError::Duplicate { name, .. } if name.as_str() == "deploy")
    );
    let msg = errors[0].to_string();
    assert!(msg.contains(&first.display().to_string()), "{msg}");
    assert!(msg.contains(&second.display().to_string()), "{msg}");
}

#[test]
fn a_file_skill_may_shadow_a_builtin() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "echo.yaml", "run: echo shadowed\n");
    let r = SkillRegistry::load(&[dir.path().to_owned()]).expect("loads");
    assert_eq!(
        r.get("echo").map(|s| &s.kind),
        Some(&SkillKind::Shell {
            run: "echo shadowed".into()
        })
    );
}

#[test]
fn a_missing_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such-skills");
    let errors = load_err(std::slice::from_ref(&missing));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains(&missing.display().to_string()),
        "{}",
        errors[0]
    );
}

#[test]
fn oversized_files_are_refused_before_parsing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = String::from("run: echo\ndescription: ");
    text.push_str(&"x".repeat(1024 * 1024));
    let path = write(dir.path(), "huge.yaml", &text);
    let errors = SkillRegistry::load(&[dir.path().to_owned()]).expect_err("too large");
    assert!(matches!(&errors[0], SkillLoadError::TooLarge { path: p, .. } if *p == path));
    assert!(
        errors[0].to_string().contains("more than the limit"),
        "{}",
        errors[0]
    );
}

#[test]
fn hostile_documents_are_refused_quickly() {
    // Hostile content sits under `inputs`, whose map values are accepted and ignored, so
    // only the parser's budget can stop it.
    let dir = tempfile::tempdir().expect("tempdir");
    // Billion laughs: every level repeats the previous one ten times.
    let mut bomb = String::from("run: echo\ninputs:\n  l0: &l0 [lol, lol, lol, lol, lol, lol]\n");
    for i in 1..=12 {
        let p = i - 1;
        let refs = vec![format!("*l{p}"); 10].join(", ");
        bomb.push_str(&format!("  l{i}: &l{i} [{refs}]\n"));
    }
    write(dir.path(), "bomb.yaml", &bomb);
    let flow = format!(
        "run: echo\ninputs:\n  x: {}{}\n",
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    write(dir.path(), "flow.yaml", &flow);
    let block: String = (0..500)
        .map(|i| format!("{}k{i}:\n", "  ".repeat(i + 1)))
        .collect();
    write(
        dir.path(),
        "block.yaml",
        &format!("run: echo\ninputs:\n{block}"),
    );
    let errors = load_err(&[dir.path().to_owned()]);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    for e in &errors {
        assert!(e.contains("limit") || e.contains("budget"), "{e}");
    }
}

#[test]
fn invalid_utf8_and_syntax_errors_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("bin.yaml"), b"run: \xff\xfe\n").expect("write");
    write(dir.path(), "syntax.yaml", "run: echo\ncommand: [unclosed\n");
    let errors = load_err(&[dir.path().to_owned()]);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains("bin.yaml: skill file is not valid UTF-8"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("syntax.yaml:"), "{}", errors[1]);
}

/// `SkillDef::parse` (the text entry point the `skill` fuzz target uses) is exactly what
/// loading the file gives: the same skill, or the same messages.
#[test]
fn parsing_a_skill_files_text_is_loading_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        "name: full\ndescription: d\nrun: ./go.sh\ntimeout: 500ms\nenv:\n  MODE: fast\ninputs: [a]\n",
        "command: [echo, hi]\noutputs: [x]\n",
        "prompt: \"Summarise ${inputs.text}\"\noutput: json\nmax_tokens: 100\n",
        "rnu: echo hi\n",
        "run: x\ncommand: [y]\ntimeout: soon\n",
        "run: [unclosed\n",
    ];
    for (i, text) in cases.into_iter().enumerate() {
        let sub = dir.path().join(i.to_string());
        fs::create_dir(&sub).expect("mkdir");
        let path = write(&sub, "skill.yaml", text);
        let parsed = SkillDef::parse(&path, text);
        match SkillRegistry::load(&[sub]) {
            Ok(r) => assert_eq!(
                parsed.as_ref().ok(),
                r.get("skill").or(r.get("full")),
                "{text}"
            ),
            Err(errors) => {
                let want: Vec<String> = errors.iter().map(ToString::to_string).collect();
                let got: Vec<String> = parsed
                    .expect_err(text)
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                assert_eq!(got, want, "{text}");
            }
        }
    }
}
