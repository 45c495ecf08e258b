//! Every runnable example in `examples/` validates and runs to success.
//!
//! One test per top-level example: `coordinator validate FILE` exits 0, then
//! `coordinator run FILE --output <tmp>/r.json --data-dir <tmp>/data` exits 0
//! and the results file says `"status": "success"`. The run starts in a
//! fresh temporary directory (the examples must not depend on the caller's
//! working directory) with `TMPDIR` pointing inside it, so whatever the
//! skills leave in the temp dir is removed with it.
//!
//! Top-level examples are the `*.yaml` / `*.json` files directly in
//! `examples/`, except `*.child.yaml`: those are sub-cascades that other
//! examples call with `cascade: NAME.child` (they run on their own too, but
//! are covered through their parents), and `models.yaml`, the default
//! models file (not a cascade). `every_example_has_a_test` fails when
//! an example is added without a line in `support::with_every_example!`.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{self, examples_dir};

fn coordinator(cwd: &Path, tmp: &Path) -> Command {
    let mut cmd = cascade_tests::coordinator_command();
    cmd.current_dir(cwd).env("TMPDIR", tmp);
    cmd
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn check_example(file: &str) {
    let path = examples_dir().join(file);
    assert!(path.is_file(), "{} is missing", path.display());
    let tmp = tempfile::tempdir().expect("temp dir");
    let cwd = tmp.path().join("cwd");
    let skill_tmp = tmp.path().join("tmp");
    std::fs::create_dir_all(&cwd).expect("cwd");
    std::fs::create_dir_all(&skill_tmp).expect("tmp");

    let out = coordinator(&cwd, &skill_tmp)
        .arg("validate")
        .arg(&path)
        .output()
        .expect("run coordinator validate");
    assert!(out.status.success(), "{}", describe("validate", &out));

    let results = tmp.path().join("r.json");
    let out = coordinator(&cwd, &skill_tmp)
        .arg("run")
        .arg(&path)
        .arg("--output")
        .arg(&results)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .output()
        .expect("run coordinator run");
    assert!(out.status.success(), "{}", describe("run", &out));

    let text = std::fs::read_to_string(&results).expect("the results file");
    let report: Value = serde_json::from_str(&text).expect("the results are JSON");
    assert_eq!(
        report["status"], "success",
        "{file}: results status\n{text}"
    );
    let stages = report["stages"].as_object().expect("`stages` is an object");
    assert!(!stages.is_empty(), "{file}: no stages in the results");
    for (id, stage) in stages {
        let status = stage["status"].as_str().unwrap_or_default();
        assert!(
            status == "success" || status == "skipped",
            "{file}: stage `{id}` is {status}\n{text}"
        );
    }
}

macro_rules! examples {
    ($($test:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check_example($file);
            }
        )*

        const TESTED: &[&str] = &[$($file),*];
    };
}

support::with_every_example!(examples);

#[test]
fn every_example_has_a_test() {
    let found = support::top_level_examples();
    let mut tested: Vec<String> = TESTED.iter().map(|s| (*s).to_owned()).collect();
    tested.sort();
    assert_eq!(
        found, tested,
        "every top-level example in examples/ needs a line in `support::with_every_example!`"
    );
}
