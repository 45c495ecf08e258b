//! One duration grammar everywhere: `1h30m`, `7d` and `500ms` mean the same in
//! a cascade file, a skill file, the models file, and every duration flag and
//! environment variable of `coordinator serve` and `worker` (which must agree:
//! the queue settings shape shared consumers).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cascade_core::models::ModelCatalog;
use cascade_exec::SkillRegistry;

const SPELLINGS: [(&str, Duration); 4] = [
    ("1h30m", Duration::from_secs(5400)),
    ("7d", Duration::from_secs(7 * 86_400)),
    ("500ms", Duration::from_millis(500)),
    ("90", Duration::from_secs(90)),
];

#[test]
fn cascade_files() {
    for (text, want) in SPELLINGS {
        let yaml = format!(
            "name: d\ntimeout: {text}\nstages:\n  - name: a\n    skills: [noop]\n    timeout: {text}\n"
        );
        let loaded = cascade_core::spec::load_str(Path::new("d.yaml"), &yaml);
        assert!(!loaded.has_errors(), "{text}: {:?}", loaded.diagnostics);
        let cascade = loaded.cascade.expect("a cascade");
        assert_eq!(cascade.timeout, Some(want), "{text}");
        assert_eq!(cascade.stages[0].timeout, Some(want), "{text}");
    }
}

#[test]
fn skill_files() {
    for (text, want) in SPELLINGS {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("s.yaml"),
            format!("run: echo\ntimeout: {text}\n"),
        )
        .expect("write");
        let registry = SkillRegistry::load(&[dir.path().to_owned()]).expect("loads");
        assert_eq!(
            registry.get("s").and_then(|s| s.timeout),
            Some(want),
            "{text}"
        );
    }
}

#[test]
fn the_models_file() {
    for (text, want) in SPELLINGS {
        let yaml = format!(
            "models:\n  m:\n    provider: openai\n    model: x\n    base_url: http://127.0.0.1:1\n    context: 1000\n    timeout: {text}\n"
        );
        let catalog = ModelCatalog::parse(&yaml, Path::new("models.yaml"))
            .unwrap_or_else(|e| panic!("{text}: {e:?}"));
        assert_eq!(catalog.get("m").map(|m| m.timeout), Some(want), "{text}");
    }
}

/// Runs a binary against a port nobody listens on: a duration the grammar
/// takes gets past argument parsing (and fails to connect, exit 1); one it
/// refuses is a usage error (exit 2) naming the value.
fn exit_of(bin: &str, args: &[&str], env: (&str, &str)) -> (Option<i32>, String) {
    let out = Command::new(cascade_tests::binary(bin))
        .args(args)
        .args(["--nats", "nats://127.0.0.1:1"])
        .env(env.0, env.1)
        .env_remove("NATS_URL")
        .output()
        .expect("run the binary");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn flags_and_env_vars_of_both_binaries() {
    let processes: [(&str, &[&str]); 2] = [
        ("worker", &["--skills", "noop"]),
        ("coordinator", &["serve"]),
    ];
    for (bin, args) in processes {
        for var in ["CASCADE_ACK_WAIT", "CASCADE_WORKER_TTL"] {
            for (text, _) in SPELLINGS {
                let (code, stderr) = exit_of(bin, args, (var, text));
                assert_ne!(code, Some(2), "{bin} {var}={text} was refused: {stderr}");
            }
            let (code, stderr) = exit_of(bin, args, (var, "1h30x"));
            assert_eq!(code, Some(2), "{bin} {var}=1h30x was taken: {stderr}");
            assert!(stderr.contains("1h30x"), "{bin}: {stderr}");
            let (code, stderr) = exit_of(bin, args, (var, "0s"));
            assert_eq!(code, Some(2), "{bin} {var}=0s was taken: {stderr}");
        }
    }
}
