//! Every cascade example of the seed documents loads, or (prose and the
//! definition template) is refused with a message saying what it is.

use std::path::{Path, PathBuf};

use super::{errors, stage};
use crate::spec::load_file;

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/seeds")
}

/// Every cascade example of the seed documents, one file each, and what
/// loading it must give: `None` loads without errors, `Some(fragment)` is
/// refused with an error holding that fragment.
const SEEDS: &[(&str, Option<&str>)] = &[
    ("readme-sequential-workflow.yaml", None),
    ("readme-parallel-with-swarm.yaml", None),
    ("readme-conditional-branching.yaml", None),
    ("readme-codex-sandbox-iteration.yaml", None),
    ("pattern1-linear-pipeline-multi-model.yaml", None),
    ("pattern2-parallel-fan-out-swarm.yaml", None),
    ("pattern3-codex-sandbox-iteration.yaml", None),
    ("pattern4-conditional-model-switching.yaml", None),
    ("pattern5-iterative-with-memory.yaml", None),
    // Not a seed: the sub-cascade pattern4 names.
    ("deep-quality-audit.yaml", None),
    // The definition template writes `a | b | c` for "one of these".
    (
        "enhanced-definition-format.yaml",
        Some("lists alternatives (a template placeholder); choose one of"),
    ),
    // The "real-world" examples are numbered prose.
    (
        "example1-complete-dev-workflow.yaml",
        Some("stages are written as a numbered list"),
    ),
    (
        "example2-legacy-modernization.yaml",
        Some("the file holds a numbered list (`1. model: \"task\"`), which is prose"),
    ),
    (
        "example3-bug-fix-rca.yaml",
        Some("stages are written as a numbered list"),
    ),
];

#[test]
fn every_seed_example_loads_or_is_refused_clearly() {
    let mut on_disk: Vec<String> = std::fs::read_dir(seeds_dir())
        .expect("seeds fixtures")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = SEEDS.iter().map(|(f, _)| (*f).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);

    for (file, expected) in SEEDS {
        let l = load_file(&seeds_dir().join(file));
        let errs = errors(&l);
        match expected {
            None => {
                assert!(errs.is_empty(), "{file}: {errs:#?}");
                assert!(l.cascade.is_some(), "{file}");
            }
            Some(fragment) => {
                assert!(!errs.is_empty(), "{file} should be refused");
                assert!(
                    errs.iter().all(|e| e.contains(fragment)),
                    "{file}: {errs:#?}"
                );
            }
        }
    }
}

#[test]
fn seed_details_survive_normalisation() {
    let c = load_file(&seeds_dir().join("pattern5-iterative-with-memory.yaml"))
        .cascade
        .expect("loads");
    let d = stage(&c, "repeat-decision");
    assert_eq!(d.repeat.as_ref().map(|(t, _)| t.as_str()), Some("refactor"));
    assert_eq!(d.max_iterations, Some(3));
    assert_eq!(d.memory.shared, Some(true));
    assert!(stage(&c, "refactor").memory.persistent);

    let c = load_file(&seeds_dir().join("pattern4-conditional-model-switching.yaml"))
        .cascade
        .expect("loads");
    assert!(c.subcascades.contains_key("deep-quality-audit"));

    let c = load_file(&seeds_dir().join("pattern3-codex-sandbox-iteration.yaml"))
        .cascade
        .expect("loads");
    let s = stage(&c, "functionality-audit");
    let sandbox = s.sandbox.as_ref().expect("sandbox config");
    assert_eq!(sandbox.tests.as_deref(), Some("comprehensive"));
    assert_eq!(sandbox.max_iterations, Some(5));
}
