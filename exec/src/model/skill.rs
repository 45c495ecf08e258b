//! Model skills: a skill file with `prompt:` instead of `run`/`command`.
//!
//! ```text
//! task ─► context (task.context, the task's inputs on top) ─► render prompt and system
//!      ─► model: task.model, else the skill's `model`            (unknown: terminal)
//!      ─► budget: shrink the output cap to what is left, or refuse (class budget)
//!      ─► complete ─► text: {"text", "model"}
//!                  └► json: parse, else extract (fences, first balanced {...}/[...]),
//!                           else ONE repair call to the same model, else malformed
//! ```
//!
//! Usage sums every call, failed ones included, and is returned next to the result so the
//! executor can put it on the task result whatever the outcome.

use std::path::PathBuf;

use cascade_eval::{Context, EvalError, Template};
use cascade_proto::{Failure, FailureClass, TaskSpec, Usage};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::client::ModelClient;
use super::error::truncate_chars;
use super::json::extract_json;
use super::request::{CallOptions, DEFAULT_MAX_OUTPUT, ModelRequest};
use crate::skills::SkillDef;
pub use crate::skills::{ModelOutput, ModelSkill};
use cascade_core::models::{ModelDef, estimate_tokens};

/// Internal results box the failure: it is large, and only the edge unboxes it.
type Step<T> = Result<T, Box<Failure>>;

/// A call whose budget leaves fewer output tokens than this is refused: its answer would
/// be cut off before it says anything useful.
pub const MIN_OUTPUT_TOKENS: u64 = 16;

const REPAIR_SYSTEM: &str = "You repair malformed JSON. Reply with only the corrected JSON value: \
                             no prose, no code fences.";

/// Runs one attempt of a model skill. Returns the outputs (or a classified failure), the
/// usage of every call made, and the model used.
pub async fn run(
    skill: &SkillDef,
    spec: &ModelSkill,
    task: &TaskSpec,
    inputs: &Map<String, Value>,
    client: &ModelClient,
    cancel: &CancellationToken,
) -> (Result<Value, Failure>, Option<Usage>, Option<String>) {
    let mut run = Run {
        skill,
        client,
        cancel,
        usage: Usage::default(),
        model: None,
    };
    let result = run.attempt(spec, task, inputs).await.map_err(|f| {
        let mut f = *f;
        f.message = format!("skill `{}`: {}", skill.name, f.message);
        f
    });
    let usage = (!run.usage.is_empty()).then_some(run.usage);
    (result, usage, run.model)
}

struct Run<'a> {
    skill: &'a SkillDef,
    client: &'a ModelClient,
    cancel: &'a CancellationToken,
    usage: Usage,
    model: Option<String>,
}

impl Run<'_> {
    async fn attempt(
        &mut self,
        spec: &ModelSkill,
        task: &TaskSpec,
        inputs: &Map<String, Value>,
    ) -> Step<Value> {
        let ctx = context(task, inputs);
        let prompt = self.render(&spec.prompt, &ctx, "prompt")?;
        let system = match &spec.system {
            Some(s) => Some(self.render(s, &ctx, "system")?),
            None => None,
        };
        let name = task
            .model
            .as_deref()
            .filter(|m| !m.trim().is_empty())
            .or(spec.model.as_deref())
            .ok_or_else(|| {
                Box::new(Failure::terminal(
                    "no model: the task names none and the skill file has no `model`",
                ))
            })?;
        self.model = Some(name.to_owned());
        let def = self
            .client
            .servable(name)
            .map_err(|e| Box::new(e.into_failure()))?;
        let mut req = ModelRequest {
            system,
            prompt,
            max_output_tokens: None,
            json: spec.output == ModelOutput::Json,
            workdir: task.workdir.as_ref().map(PathBuf::from),
        };
        let opts = CallOptions {
            temperature: spec.temperature,
        };
        req.max_output_tokens = Some(self.output_cap(def, spec, task, &req)?);
        let answer = self.call(name, &req, &opts).await?;
        match spec.output {
            ModelOutput::Text => Ok(json!({"text": answer, "model": name})),
            ModelOutput::Json => self.json_output(def, spec, task, &req, answer).await,
        }
    }

    /// Renders a template to a string; an undefined reference is a terminal failure that
    /// names the skill file and the reference.
    fn render(&self, template: &str, ctx: &Context, field: &str) -> Step<String> {
        let rendered = Template::parse(template).and_then(|t| t.render(ctx));
        match rendered {
            Ok(Value::String(s)) => Ok(s),
            Ok(other) => Ok(cascade_eval::stringify(&other)),
            Err(e) => {
                let file = self
                    .skill
                    .source
                    .as_ref()
                    .map_or_else(|| "built-in".to_owned(), |p| p.display().to_string());
                let what = match &e {
                    EvalError::Undefined { .. } => "cannot render",
                    _ => "invalid template in",
                };
                Err(Box::new(Failure::terminal(format!(
                    "{what} `{field}` of {file}: {e}"
                ))))
            }
        }
    }

    /// The output cap: the skill's `max_tokens` (else the model's), shrunk to what the
    /// task's budget leaves after the prompt; a budget that leaves less than
    /// [`MIN_OUTPUT_TOKENS`] refuses the call (class `budget`, terminal).
    fn output_cap(
        &self,
        def: &ModelDef,
        spec: &ModelSkill,
        task: &TaskSpec,
        req: &ModelRequest,
    ) -> Step<u64> {
        let wanted = spec
            .max_tokens
            .or(def.max_output)
            .unwrap_or(DEFAULT_MAX_OUTPUT);
        let mut cap = def.max_output.map_or(wanted, |m| wanted.min(m));
        let Some(budget) = &task.budget else {
            return Ok(cap);
        };
        let input = estimate_tokens(&req.prompt) + req.system.as_deref().map_or(0, estimate_tokens);
        let spent = &self.usage;
        if let Some(max_tokens) = budget.max_tokens {
            let left = max_tokens
                .saturating_sub(spent.tokens())
                .saturating_sub(input);
            if left < MIN_OUTPUT_TOKENS {
                return Err(budget_failure(format!(
                    "the prompt (about {input} tokens, estimated) plus an answer does not fit \
                     the token budget of {max_tokens}{}",
                    spent_note(spent)
                )));
            }
            cap = cap.min(left);
        }
        if let Some(max_cost) = budget.max_cost_usd {
            let left = max_cost - spent.cost_usd - def.cost(input, 0);
            let affordable = if def.price_out_per_1k > 0.0 {
                (left.max(0.0) / def.price_out_per_1k * 1000.0).floor() as u64
            } else if left >= 0.0 {
                u64::MAX
            } else {
                0
            };
            if affordable < MIN_OUTPUT_TOKENS {
                return Err(budget_failure(format!(
                    "calling model `{}` with this prompt (about {input} tokens) would cost more \
                     than the budget of ${max_cost:.4}{}",
                    def.name,
                    spent_note(spent)
                )));
            }
            cap = cap.min(affordable);
        }
        Ok(cap)
    }

    /// One `complete`, its usage counted whatever the outcome.
    async fn call(&mut self, model: &str, req: &ModelRequest, opts: &CallOptions) -> Step<String> {
        match self
            .client
            .complete_with(model, req, opts, self.cancel)
            .await
        {
            Ok(c) => {
                self.usage.add(&c.usage);
                Ok(c.text)
            }
            Err(e) => {
                if let Some(u) = &e.usage {
                    self.usage.add(u);
                }
                Err(Box::new(e.into_failure()))
            }
        }
    }

    async fn json_output(
        &mut self,
        def: &ModelDef,
        spec: &ModelSkill,
        task: &TaskSpec,
        first: &ModelRequest,
        answer: String,
    ) -> Step<Value> {
        if let Some(v) = extract_json(&answer) {
            return Ok(shape(v, &def.name));
        }
        tracing::debug!(model = %def.name, skill = %self.skill.name, "answer is not JSON, asking for a repair");
        let mut repair = ModelRequest {
            system: Some(REPAIR_SYSTEM.to_owned()),
            prompt: format!(
                "The text between the markers was meant to be one valid JSON value but does not \
                 parse. Return only that JSON value, corrected.\n\n<<<\n{answer}\n>>>"
            ),
            max_output_tokens: None,
            json: true,
            workdir: first.workdir.clone(),
        };
        repair.max_output_tokens = Some(self.output_cap(def, spec, task, &repair)?);
        let repaired = self
            .call(&def.name, &repair, &CallOptions::default())
            .await?;
        extract_json(&repaired)
            .map(|v| shape(v, &def.name))
            .ok_or_else(|| {
                Box::new(
                    Failure::retryable(format!(
                        "model `{}`'s answer is not valid JSON, even after a repair request: {}",
                        def.name,
                        truncate_chars(answer.trim(), 300)
                    ))
                    .with_class(FailureClass::Malformed),
                )
            })
    }
}

fn budget_failure(message: String) -> Box<Failure> {
    Box::new(Failure::terminal(message).with_class(FailureClass::Budget))
}

fn spent_note(spent: &Usage) -> String {
    if spent.is_empty() {
        String::new()
    } else {
        format!(
            " (this attempt already spent {} tokens, ${:.4})",
            spent.tokens(),
            spent.cost_usd
        )
    }
}

/// The context a prompt renders against: `task.context` (inputs, memory, cascade and
/// earlier stages' outputs) with the task's own inputs on top of `inputs`; without it,
/// the inputs only, and `memory` from the input of that name.
fn context(task: &TaskSpec, inputs: &Map<String, Value>) -> Context {
    let Some(given) = task.context.as_ref().and_then(Value::as_object) else {
        let memory = inputs.get("memory").cloned().unwrap_or(Value::Null);
        return Context::new(Value::Object(inputs.clone()), memory, Value::Null);
    };
    let mut merged = given
        .get("inputs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in inputs {
        merged.insert(k.clone(), v.clone());
    }
    let field = |k: &str| given.get(k).cloned().unwrap_or(Value::Null);
    let mut ctx = Context::new(Value::Object(merged), field("memory"), field("cascade"));
    // In the context's order, which is the order stages completed: a bare `${name}`
    // searches the most recent first.
    for (k, v) in given {
        if !matches!(k.as_str(), "inputs" | "memory" | "cascade") {
            ctx.set_stage_output(k, v.clone());
        }
    }
    ctx
}

/// A JSON answer as outputs: an object as is, anything else under `result`; plus `model`
/// unless the answer has its own.
fn shape(v: Value, model: &str) -> Value {
    let mut map = match v {
        Value::Object(map) => map,
        other => Map::from_iter([("result".to_owned(), other)]),
    };
    map.entry("model").or_insert_with(|| json!(model));
    Value::Object(map)
}

/// Asks `model` which candidate answers `question` best.
///
/// Returns `{"choice": <0-based index>, "model": <that candidate's model>, "reason": ..}`;
/// an answer that is not such JSON, or whose choice is out of range, is `malformed`.
pub async fn judge(
    client: &ModelClient,
    model: &str,
    question: &Value,
    candidates: &[(String, Value)],
    cancel: &CancellationToken,
) -> (Result<Value, Failure>, Option<Usage>) {
    if candidates.is_empty() {
        return (
            Err(Failure::terminal("judge: no candidates to choose from")),
            None,
        );
    }
    let req = ModelRequest {
        system: Some(
            "You are an impartial judge. Compare the candidate answers to the question and \
             choose the best one: correct, complete, and directly useful."
                .to_owned(),
        ),
        prompt: judge_prompt(question, candidates),
        max_output_tokens: Some(1024),
        json: true,
        workdir: None,
    };
    let completion = match client.complete(model, &req, cancel).await {
        Ok(c) => c,
        Err(mut e) => {
            let usage = e.usage.take();
            e.message = format!("judge: {}", e.message);
            return (Err(e.into_failure()), usage);
        }
    };
    let usage = Some(completion.usage.clone());
    let verdict = extract_json(&completion.text).and_then(|v| {
        let choice = v.get("choice")?;
        let index = choice
            .as_u64()
            .or_else(|| choice.as_str().and_then(|s| s.trim().parse().ok()))?;
        let (chosen, _) = candidates.get(usize::try_from(index).ok()?)?;
        let reason = v.get("reason").and_then(Value::as_str).unwrap_or_default();
        Some(json!({"choice": index, "model": chosen, "reason": reason}))
    });
    let result = verdict.ok_or_else(|| {
        Failure::retryable(format!(
            "judge: model `{model}` did not answer with {{\"choice\": 0..{}, \"reason\": ..}}: {}",
            candidates.len() - 1,
            truncate_chars(completion.text.trim(), 300)
        ))
        .with_class(FailureClass::Malformed)
    });
    (result, usage)
}

fn judge_prompt(question: &Value, candidates: &[(String, Value)]) -> String {
    let show = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    };
    let mut prompt = format!("Question:\n{}\n\nCandidate answers:\n", show(question));
    for (i, (_, answer)) in candidates.iter().enumerate() {
        prompt.push_str(&format!("\n[{i}]\n{}\n", show(answer)));
    }
    prompt.push_str(&format!(
        "\nWhich candidate is best? Reply with only this JSON: {{\"choice\": N, \"reason\": \
         \"one or two sentences\"}}, where N is the candidate's number, from 0 to {}.",
        candidates.len() - 1
    ));
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(shape(json!({"a": 1}), "m"), json!({"a": 1, "model": "m"}));
        assert_eq!(shape(json!({"model": "x"}), "m"), json!({"model": "x"}));
        assert_eq!(shape(json!([1]), "m"), json!({"result": [1], "model": "m"}));
    }
}
