//! The executor's AI skills: model skills (a prompt sent to a model), the
//! multi-model judge, and the `codex-sandbox` test-and-fix loop with its
//! fixers (a command, a model asked for edits, a CLI agent editing the
//! sandbox itself).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use cascade_proto::{Failure, FailureClass, TaskSpec, Usage};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::model::{ModelClient, ModelRequest};
use crate::sandbox::{
    CommandFixer, FileEdit, FixProposal, FixRequest, Fixer, FixerSpec, LoopConfig, run_loop,
};
use crate::skills::{SkillKind, SkillRegistry};

/// What an AI skill returns: its outcome, what its model calls cost and
/// the model that answered.
pub(crate) type AiOutcome = (Result<Value, Failure>, Option<Usage>, Option<String>);

/// Judges a multi-model stage's answers: inputs `question` and
/// `candidates: [{model, output}]`, the judging model is the task's.
pub(crate) async fn judge(
    client: &ModelClient,
    task: &TaskSpec,
    inputs: &Map<String, Value>,
    cancel: &CancellationToken,
) -> AiOutcome {
    let Some(model) = task.model.clone() else {
        return (
            Err(Failure::terminal("judge: the task names no judging model")),
            None,
            None,
        );
    };
    let question = inputs.get("question").cloned().unwrap_or(Value::Null);
    let candidates: Vec<(String, Value)> = inputs
        .get("candidates")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c.get("model")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        c.get("output").cloned().unwrap_or(Value::Null),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let (result, usage) =
        crate::model::skill::judge(client, &model, &question, &candidates, cancel).await;
    (result, usage, Some(model))
}

/// Runs one `codex-sandbox` task: resolves a test skill into the test
/// command, picks the fixer and runs the loop.
pub(crate) async fn sandbox(
    registry: &SkillRegistry,
    client: &ModelClient,
    task: &TaskSpec,
    inputs: &Map<String, Value>,
    cancel: &CancellationToken,
) -> AiOutcome {
    let mut inputs = inputs.clone();
    let mut env = BTreeMap::new();
    if !inputs.contains_key("test")
        && let Some(name) = inputs.get("test_skill").and_then(Value::as_str)
    {
        match test_command(registry, name, inputs.get("test_inputs"), &mut env) {
            Ok(cmd) => {
                inputs.insert("test".into(), Value::String(cmd));
            }
            Err(f) => return (Err(f), None, None),
        }
    }
    if !inputs.contains_key("fix_command")
        && !inputs.contains_key("fixer")
        && let Some(m) = &task.model
    {
        inputs.insert("fixer".into(), json!({ "model": m }));
    }
    let workdir = task.workdir.as_deref().map(Path::new);
    let mut cfg = match LoopConfig::from_inputs(&inputs, workdir) {
        Ok(c) => c,
        Err(msg) => {
            return (
                Err(Failure::terminal(format!("codex-sandbox: {msg}"))),
                None,
                None,
            );
        }
    };
    cfg.env.extend(env);
    if cfg.artifacts_dir.is_none() {
        let base = workdir.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let base = std::path::absolute(&base).unwrap_or(base);
        cfg.artifacts_dir = Some(
            base.join(".cascade")
                .join("artifacts")
                .join(safe(task.run_id.as_str()))
                .join(safe(task.stage_id.as_str())),
        );
    }
    let stage = task.stage_id.to_string();
    let progress = move |msg: &str| tracing::info!(stage = %stage, "codex-sandbox: {msg}");
    match &cfg.fixer {
        FixerSpec::Command(_) => {
            let fixer = match CommandFixer::new(cfg_command(&cfg), &cfg) {
                Ok(f) => f,
                Err(msg) => {
                    return (
                        Err(Failure::terminal(format!("codex-sandbox: {msg}"))),
                        None,
                        None,
                    );
                }
            };
            let out = run_loop(&cfg, &fixer, cancel, &progress).await;
            (out.result, None, None)
        }
        FixerSpec::Model(_) | FixerSpec::Agent(_) => {
            let m = match &cfg.fixer {
                FixerSpec::Agent(a) => agent_model(client, a),
                FixerSpec::Model(m) | FixerSpec::Command(m) => m.clone(),
            };
            let fixer = ModelFixer {
                client: client.clone(),
                model: m.clone(),
                usage: Arc::new(Mutex::new(Usage::default())),
            };
            let out = run_loop(&cfg, &fixer, cancel, &progress).await;
            let usage = fixer.usage.lock().map(|u| u.clone()).unwrap_or_default();
            (out.result, Some(usage), Some(m.clone()))
        }
    }
}

/// `fixer: {agent: codex}` names a CLI agent: the models file's entry for
/// that program (`codex-cli`, `claude-code`, `gemini-cli` in the default
/// file), else a model of that name.
fn agent_model(client: &ModelClient, agent: &str) -> String {
    let catalog = client.catalog();
    if catalog.get(agent).is_some_and(|d| d.is_cli()) {
        return agent.to_owned();
    }
    catalog
        .names()
        .filter_map(|n| catalog.get(n))
        .find(|d| d.is_cli() && d.program().rsplit('/').next() == Some(agent))
        .map_or_else(|| agent.to_owned(), |d| d.name.clone())
}

/// A test skill as a shell command, with its inputs in the environment the
/// way any skill gets them (`CASCADE_INPUT_<NAME>`).
fn test_command(
    registry: &SkillRegistry,
    name: &str,
    test_inputs: Option<&Value>,
    env: &mut BTreeMap<String, String>,
) -> Result<String, Failure> {
    let skill = registry
        .get(name)
        .ok_or_else(|| Failure::terminal(format!("codex-sandbox: unknown test skill `{name}`")))?;
    let cmd = match &skill.kind {
        SkillKind::Shell { run } => run.clone(),
        SkillKind::Command { argv } => argv
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" "),
        _ => {
            return Err(Failure::terminal(format!(
                "codex-sandbox: test skill `{name}` is not a command (a `run` or `command` skill is needed)"
            )));
        }
    };
    env.extend(skill.env.clone());
    if let Some(dir) = skill.dir() {
        env.insert("CASCADE_SKILL_DIR".into(), dir.display().to_string());
    }
    if let Some(Value::Object(m)) = test_inputs {
        for (k, v) in m {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if !v.contains('\0') {
                env.insert(super::process::input_var(k), v);
            }
        }
    }
    Ok(cmd)
}

fn cfg_command(cfg: &LoopConfig) -> String {
    match &cfg.fixer {
        FixerSpec::Command(c) => c.clone(),
        _ => String::new(),
    }
}

fn label<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Asks a model for a fix. An HTTP model answers with whole-file edits
/// (or a unified diff); a CLI agent runs in the sandbox copy and edits it.
struct ModelFixer {
    client: ModelClient,
    model: String,
    usage: Arc<Mutex<Usage>>,
}

const FIX_SYSTEM: &str = "You fix failing tests by changing the source code, never the tests, \
unless a test is plainly wrong. Make the smallest change that makes the failing tests pass \
without breaking the others.";

impl ModelFixer {
    fn prompt(req: &FixRequest, agent: bool) -> String {
        let mut p = format!(
            "Iteration {} of a test-and-fix loop. The test command `{}` reports these failures:\n\n",
            req.iteration, req.test_command
        );
        for f in &req.failures {
            p.push_str(&format!(
                "- {} [{}]{}: {}\n",
                f.name,
                label(&f.class),
                f.file
                    .as_ref()
                    .map(|file| format!(
                        " at {file}{}",
                        f.line.map(|l| format!(":{l}")).unwrap_or_default()
                    ))
                    .unwrap_or_default(),
                f.message
            ));
        }
        if !req.history.is_empty() {
            p.push_str(
                "\nEarlier iterations (their changes are in the files already or were rejected):\n",
            );
            for h in &req.history {
                p.push_str(&format!(
                    "- iteration {}: {} ({} failing)\n",
                    h.iteration,
                    label(&h.outcome),
                    h.failures.len()
                ));
            }
        }
        if agent {
            p.push_str("\nEdit the files in the current directory to fix them. Do not run the tests' network access; do not touch files outside this directory.\n");
            return p;
        }
        p.push_str("\nThe relevant files:\n");
        for (path, content) in &req.files {
            p.push_str(&format!("\n=== {path} ===\n{content}\n"));
        }
        p.push_str(
            "\nAnswer with JSON only: {\"edits\": [{\"path\": \"relative/path\", \"content\": \"the whole new file\"}], \"explanation\": \"...\"}\n",
        );
        p
    }

    fn add_usage(&self, u: &Usage) {
        if let Ok(mut total) = self.usage.lock() {
            total.add(u);
        }
    }
}

impl Fixer for ModelFixer {
    fn propose<'a>(
        &'a self,
        req: &'a FixRequest,
        sandbox_dir: &'a Path,
        cancel: &'a CancellationToken,
    ) -> Pin<Box<dyn Future<Output = Result<FixProposal, Failure>> + Send + 'a>> {
        Box::pin(async move {
            let agent = self
                .client
                .catalog()
                .get(&self.model)
                .is_some_and(|d| d.is_cli());
            let request = ModelRequest {
                system: Some(FIX_SYSTEM.to_owned()),
                prompt: Self::prompt(req, agent),
                max_output_tokens: None,
                json: !agent,
                workdir: agent.then(|| sandbox_dir.to_path_buf()),
            };
            let done = match self.client.complete(&self.model, &request, cancel).await {
                Ok(c) => c,
                Err(e) => {
                    if let Some(u) = &e.usage {
                        self.add_usage(u);
                    }
                    return Err(e.into_failure());
                }
            };
            self.add_usage(&done.usage);
            if agent {
                return Ok(FixProposal::InPlace);
            }
            parse_proposal(&done.text).ok_or_else(|| {
                Failure::retryable(format!("`{}` answered without edits or a diff", self.model))
                    .with_class(FailureClass::Malformed)
            })
        })
    }
}

/// `{"edits": [{path, content}]}` (bare, fenced or amid prose), else a
/// unified diff.
fn parse_proposal(text: &str) -> Option<FixProposal> {
    let trimmed = text.trim();
    if let Some(v) = crate::model::extract_json(trimmed)
        && let Some(edits) = v.get("edits").and_then(Value::as_array)
    {
        let edits: Vec<FileEdit> = edits
            .iter()
            .filter_map(|e| {
                Some(FileEdit {
                    path: e.get("path")?.as_str()?.to_owned(),
                    content: e.get("content")?.as_str()?.to_owned(),
                })
            })
            .collect();
        return (!edits.is_empty()).then_some(FixProposal::Edits(edits));
    }
    let diff_start = trimmed.find("--- ")?;
    let diff = trimmed[diff_start..]
        .split("\n```")
        .next()
        .unwrap_or_default();
    diff.contains("\n+++ ")
        .then(|| FixProposal::Diff(format!("{}\n", diff.trim_end())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_parse_from_json_edits_and_diffs() {
        let json = "```json\n{\"edits\": [{\"path\": \"a.py\", \"content\": \"x = 1\\n\"}]}\n```";
        assert!(matches!(parse_proposal(json), Some(FixProposal::Edits(e)) if e[0].path == "a.py"));
        let prose = "Here is the fix:\n```json\n{\"edits\": [{\"path\": \"b.py\", \"content\": \"\"}]}\n```\nThat should do it.";
        assert!(
            matches!(parse_proposal(prose), Some(FixProposal::Edits(e)) if e[0].path == "b.py")
        );
        let diff = "Here:\n```diff\n--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-x = 0\n+x = 1\n```";
        assert!(
            matches!(parse_proposal(diff), Some(FixProposal::Diff(d)) if d.starts_with("--- a/a.py"))
        );
        assert!(parse_proposal("I cannot help").is_none());
    }

    #[test]
    fn arguments_are_quoted_for_the_shell() {
        assert_eq!(shell_quote("python3"), "python3");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
