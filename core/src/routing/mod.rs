//! Model selection for AI stages.
//!
//! `auto-select` (and the `multi-model` stage type, the seed's "intelligent
//! AI routing") applies the seed's rules, in order, to flags in the stage's
//! inputs: `large_context` -> gemini-megacontext, `current_info` ->
//! gemini-search, `visual_output` -> gemini-media, `rapid_prototype` ->
//! codex-auto, `alternative_view` -> codex-reasoning, otherwise claude.
//! An explicit model name is honoured as written. The router then checks
//! the prompt's estimated tokens against the chosen model's context limit
//! (from the models file) and moves to the smallest model that holds it.

use crate::models::ModelCatalog;
use serde_json::{Map, Value};

/// The rules in the order the seed applies them.
pub const AUTO_SELECT_RULES: [(&str, &str); 5] = [
    ("large_context", "gemini-megacontext"),
    ("current_info", "gemini-search"),
    ("visual_output", "gemini-media"),
    ("rapid_prototype", "codex-auto"),
    ("alternative_view", "codex-reasoning"),
];

pub const DEFAULT_MODEL: &str = "claude";

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Selection {
    pub model: String,
    pub reason: String,
}

/// What the router can say before the run: a model, or that it depends on
/// inputs only known at run time.
#[derive(Clone, Debug, PartialEq)]
pub enum Planned {
    Model(Selection),
    AtRunTime(String),
}

pub fn is_router(name: &str) -> bool {
    matches!(name, "auto-select" | "auto" | "multi-model")
}

/// Selects with every input known (at dispatch, inputs rendered).
pub fn select(requested: &str, inputs: &Map<String, Value>) -> Selection {
    if !is_router(requested) {
        return Selection {
            model: requested.to_owned(),
            reason: "named in the cascade".into(),
        };
    }
    for (flag, model) in AUTO_SELECT_RULES {
        if inputs.get(flag).is_some_and(truthy) {
            return Selection {
                model: model.into(),
                reason: format!("auto-select: input `{flag}` is set"),
            };
        }
    }
    Selection {
        model: DEFAULT_MODEL.into(),
        reason: "auto-select: no routing flag set, best overall".into(),
    }
}

/// Selects, then checks the estimate against the model's context: a
/// prompt that does not fit moves to the smallest model whose context
/// holds it (an explicit name too: it could not run as written).
pub fn select_with(
    requested: &str,
    inputs: &Map<String, Value>,
    catalog: &ModelCatalog,
    estimated_tokens: u64,
) -> Selection {
    let sel = select(requested, inputs);
    let Some(def) = catalog.get(&sel.model) else {
        return sel;
    };
    if estimated_tokens <= def.context {
        return sel;
    }
    match catalog.larger_context_than(&sel.model, estimated_tokens) {
        Some(bigger) => Selection {
            reason: format!(
                "{}; but ~{estimated_tokens} tokens exceed its context of {}, so `{bigger}`",
                sel.reason, def.context
            ),
            model: bigger,
        },
        None => sel,
    }
}

/// Selects at plan time; a flag that is still a `${...}` template makes
/// the choice depend on the run.
pub fn plan(requested: &str, inputs: &Map<String, Value>) -> Planned {
    if !is_router(requested) {
        return Planned::Model(select(requested, inputs));
    }
    for (flag, model) in AUTO_SELECT_RULES {
        match inputs.get(flag) {
            Some(Value::String(s)) if s.contains("${") => {
                return Planned::AtRunTime(format!("auto-select: depends on `{flag}` = {s}"));
            }
            Some(v) if truthy(v) => {
                return Planned::Model(Selection {
                    model: model.into(),
                    reason: format!("auto-select: input `{flag}` is set"),
                });
            }
            _ => {}
        }
    }
    Planned::Model(select(requested, inputs))
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !matches!(
            s.to_ascii_lowercase().as_str(),
            "" | "false" | "no" | "off" | "0"
        ),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inputs(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn seed_rules_in_order() {
        let cases = [
            (json!({}), "claude"),
            (
                json!({"large_context": true, "current_info": true}),
                "gemini-megacontext",
            ),
            (json!({"current_info": true}), "gemini-search"),
            (json!({"visual_output": "yes"}), "gemini-media"),
            (json!({"rapid_prototype": 1}), "codex-auto"),
            (json!({"alternative_view": true}), "codex-reasoning"),
            (json!({"large_context": false}), "claude"),
        ];
        for (i, want) in cases {
            assert_eq!(select("auto-select", &inputs(i.clone())).model, want, "{i}");
        }
        assert_eq!(select("gemini-search", &Map::new()).model, "gemini-search");
    }

    #[test]
    fn templates_defer_the_choice() {
        let p = plan(
            "auto-select",
            &inputs(json!({"large_context": "${inputs.big}"})),
        );
        assert!(matches!(p, Planned::AtRunTime(_)));
    }
}
