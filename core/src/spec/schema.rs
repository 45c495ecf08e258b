//! A JSON Schema (draft 2020-12) of the cascade format, for editors:
//! completion and inline checks of field names, types and enumerations.
//!
//! The schema is generous where the loader is (every accepted variant and
//! alias is valid) and strict on names (unknown fields are flagged), so a
//! file the loader accepts never shows schema errors. `validate` remains
//! the authority: it also checks references, cycles and skills.

use serde_json::{Map, Value, json};

use super::model::{ErrorStrategy, SANDBOX_KEYS, SelectMode, StageType};
use super::normalize::{BRANCH_FIELDS, DOC_SECTIONS, STAGE_FIELDS};

/// The schema as a JSON value.
pub fn cascade_schema() -> Value {
    let mut doc_props = section_properties();
    doc_props.insert(
        "cascade".into(),
        json!({
            "description": "The cascade's name, or a section holding the whole document.",
            "oneOf": [{"type": "string"}, {"$ref": "#/$defs/section"}]
        }),
    );
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://cascade.invalid/schema/cascade.json",
        "title": "Cascade",
        "description": "A declarative workflow of skills (coordinator validate / plan / run / submit).",
        "type": "object",
        "properties": doc_props,
        "additionalProperties": false,
        "$defs": {
            "section": {
                "type": "object",
                "properties": section_properties(),
                "additionalProperties": false
            },
            "flag": {
                "description": "true or false (also yes/no, on/off, enabled/disabled).",
                "anyOf": [{"type": "boolean"}, {"enum": ["yes", "no", "on", "off", "enabled", "disabled"]}]
            },
            "stage": stage(),
            "stages": {"type": "array", "items": {"$ref": "#/$defs/stage"}},
            "duration": {
                "description": "A duration: `30s`, `5m`, `1h`, `7d`, `250ms`, or seconds as a number.",
                "oneOf": [
                    {"type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]+)?\\s*(ms|s|m|h|d)?\\s*$"},
                    {"type": "number", "minimum": 0}
                ]
            },
            "template": {
                "description": "A value; strings may hold `${...}` templates.",
            },
            "inputs": {
                "description": "Inputs: a list of declarations or a map of name to declaration.",
                "oneOf": [
                    {"type": "array", "items": input_decl(true)},
                    {
                        "type": "object",
                        "description": "name: a declaration, or the default value itself.",
                        "additionalProperties": {"anyOf": [input_decl(false), {"not": {"type": "object"}}]}
                    }
                ]
            },
            "condition": {
                "description": "An expression (`${score} >= 80 AND ...`), or a structured condition.",
                "oneOf": [
                    {"type": ["string", "boolean"]},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"enum": ["comparison", "threshold", "exists", "regex", "custom", "all", "any"]},
                            "left": {}, "operator": {"enum": ["==", "!=", ">", "<", ">=", "<=", "contains"]},
                            "right": {}, "metric": {}, "threshold": {},
                            "comparison": {"enum": [">", "<", ">=", "<="]},
                            "path": {"type": "string"}, "value": {}, "pattern": {"type": "string"},
                            "script": {"type": "string", "description": "A jq expression over the context (never a shell)."},
                            "all": {"type": "array", "items": {"$ref": "#/$defs/condition"}},
                            "any": {"type": "array", "items": {"$ref": "#/$defs/condition"}},
                            "conditions": {"type": "array", "items": {"$ref": "#/$defs/condition"}}
                        }
                    }
                ]
            },
            "skillRef": {
                "oneOf": [
                    {"type": "string"},
                    {
                        "type": "object",
                        "properties": {
                            "skill": {"type": "string"}, "name": {"type": "string"},
                            "inputs": {"type": "object"},
                            "outputs": {"type": "array", "items": {"type": "string"}},
                            "model": {"$ref": "#/$defs/model"},
                            "priority": {"type": "integer"}
                        },
                        "additionalProperties": false
                    }
                ]
            },
            "model": {
                "description": "A model name from the models file, or a router: auto-select, auto, multi-model.",
                "type": "string",
                "examples": ["auto-select", "claude", "gemini-megacontext", "gemini-search",
                             "gemini-media", "codex-auto", "codex-reasoning", "gemini", "codex"]
            },
            "errorHandling": error_handling(),
            "budget": {
                "type": "object",
                "properties": {
                    "max_tokens": {"type": "integer", "minimum": 1},
                    "max_cost_usd": {"type": "number", "minimum": 0},
                    "max_cost": {"type": "number", "minimum": 0}
                },
                "additionalProperties": false
            },
            "sandbox": sandbox()
        }
    })
}

fn section_properties() -> Map<String, Value> {
    let mut m = Map::new();
    for key in DOC_SECTIONS {
        let v = match *key {
            "name" => json!({"type": "string", "description": "The cascade's name (required)."}),
            "description" => json!({"type": "string"}),
            "version" => json!({"type": "string", "description": "Semver; default 1.0.0."}),
            "config" => {
                json!({"type": "object", "description": "Free-form settings (multi_model, swarm_coordination, ...)."})
            }
            "inputs" => json!({"$ref": "#/$defs/inputs"}),
            "stages" | "workflows" => json!({"$ref": "#/$defs/stages"}),
            "memory" => json!({
                "type": "object",
                "properties": {
                    "persistence": {"$ref": "#/$defs/flag"},
                    "scope": {"enum": ["cascade", "global"]},
                    "retention": {"$ref": "#/$defs/duration"},
                    "keys": {"type": "array", "items": {"type": "string"}},
                    "cleanup_between_stages": {"$ref": "#/$defs/flag"},
                    "cleanup_on_exit": {"$ref": "#/$defs/flag"},
                    "max_memory_mb": {"type": "integer", "minimum": 0},
                    "checkpoints": {"type": "array", "items": {"type": "string"}},
                    "storage": {}
                },
                "additionalProperties": false
            }),
            "error_handling" => json!({"$ref": "#/$defs/errorHandling"}),
            "timeout" => json!({"$ref": "#/$defs/duration"}),
            "budget" => json!({"$ref": "#/$defs/budget"}),
            _ => json!({}),
        };
        m.insert((*key).to_owned(), v);
    }
    m
}

fn input_decl(named: bool) -> Value {
    let mut props = json!({
        "type": {"type": "string"},
        "description": {"type": "string"},
        "required": {"$ref": "#/$defs/flag"},
        "default": {}
    });
    if named && let Some(o) = props.as_object_mut() {
        o.insert("name".into(), json!({"type": "string"}));
    }
    json!({"type": "object", "properties": props, "additionalProperties": false})
}

fn stage() -> Value {
    let types: Vec<&str> = StageType::NAMES.to_vec();
    let selects: Vec<&str> = SelectMode::NAMES.to_vec();
    let mut props = Map::new();
    for key in STAGE_FIELDS {
        let v = match *key {
            "stage_id" | "stage" | "skill_id" | "id" => {
                json!({"type": "string", "description": "The stage's id (one of stage_id, stage, skill_id, id)."})
            }
            "name" | "description" => json!({"type": "string"}),
            "type" => {
                json!({"enum": types, "description": "Default sequential (conditional with branches)."})
            }
            "model" => json!({"$ref": "#/$defs/model"}),
            "skill" => json!({"type": "string"}),
            "skills" | "steps" => json!({
                "oneOf": [{"type": "string"}, {"type": "array", "items": {"$ref": "#/$defs/skillRef"}}]
            }),
            "inputs" => {
                json!({"type": "object", "additionalProperties": {"$ref": "#/$defs/template"}})
            }
            "outputs" => json!({"type": "array", "items": {"type": "string"}}),
            "dependencies" | "depends_on" => json!({
                "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]
            }),
            "condition" | "conditions" => json!({"$ref": "#/$defs/condition"}),
            "branches" => branches(),
            "repeat" => {
                json!({"type": "string", "description": "Loop back to this stage (with max_iterations)."})
            }
            "max_iterations" => json!({"type": "integer", "minimum": 1}),
            "memory" => json!({
                "oneOf": [
                    {"enum": ["persistent"]},
                    {
                        "type": "object",
                        "properties": {
                            "read_keys": {"type": "array", "items": {"type": "string"}},
                            "write_keys": {"type": "array", "items": {"type": "string"}},
                            "persistent": {"$ref": "#/$defs/flag"},
                            "shared": {"$ref": "#/$defs/flag"}
                        },
                        "additionalProperties": false
                    }
                ]
            }),
            "memory_shared" => json!({"$ref": "#/$defs/flag"}),
            "swarm_config" => json!({
                "type": "object",
                "properties": {
                    "topology": {"enum": ["mesh", "star", "hierarchical"]},
                    "max_agents": {"oneOf": [{"type": "integer", "minimum": 1}, {"enum": ["auto"]}]},
                    "strategy": {"enum": ["balanced", "specialized", "adaptive"]},
                    "memory_shared": {"$ref": "#/$defs/flag"}
                },
                "additionalProperties": false
            }),
            "codex_config" | "fix_strategy" | "error_recovery" => {
                json!({"$ref": "#/$defs/sandbox"})
            }
            "test_suite" | "tests" => json!({"type": "string"}),
            "error_handling" => json!({"$ref": "#/$defs/errorHandling"}),
            "cascade" => {
                json!({"type": "string", "description": "Run another cascade (a file beside this one) as this stage."})
            }
            "substages" => json!({"$ref": "#/$defs/stages"}),
            "timeout" | "task_timeout" => json!({"$ref": "#/$defs/duration"}),
            "for_each" => {
                json!({"description": "A list (or a template giving one): one task per item."})
            }
            "priority" => json!({"type": "integer"}),
            "models" => json!({"type": "array", "items": {"$ref": "#/$defs/model"}, "minItems": 2}),
            "select" => json!({
                "oneOf": [
                    {"enum": selects.clone()},
                    {
                        "type": "object",
                        "properties": {"mode": {"enum": selects}, "judge": {"$ref": "#/$defs/model"}},
                        "additionalProperties": false
                    }
                ]
            }),
            "judge" => json!({"$ref": "#/$defs/model"}),
            "budget" => json!({"$ref": "#/$defs/budget"}),
            _ => json!({}),
        };
        props.insert((*key).to_owned(), v);
    }
    json!({"type": "object", "properties": props, "additionalProperties": false})
}

fn branches() -> Value {
    let mut branch = Map::new();
    for key in BRANCH_FIELDS {
        let v = match *key {
            "name" | "description" | "skill" | "cascade" => json!({"type": "string"}),
            "condition" | "conditions" => json!({"$ref": "#/$defs/condition"}),
            "stages" => json!({"$ref": "#/$defs/stages"}),
            "default" => json!({"$ref": "#/$defs/flag"}),
            "model" => json!({"$ref": "#/$defs/model"}),
            "inputs" => json!({"type": "object"}),
            _ => json!({}),
        };
        branch.insert((*key).to_owned(), v);
    }
    let item = json!({"type": "object", "properties": branch, "additionalProperties": false});
    json!({
        "description": "A list (first match wins), a map of named branches (with `default: NAME`), or pass/fail lists.",
        "oneOf": [
            {"type": "array", "items": item},
            {"type": "object", "additionalProperties": {"oneOf": [item, {"type": "string"}, {"$ref": "#/$defs/stages"}]}}
        ]
    })
}

fn error_handling() -> Value {
    let strategies: Vec<&str> = ErrorStrategy::NAMES.to_vec();
    json!({
        "oneOf": [
            {"type": "array", "items": {"type": "string"}, "description": "The seed's list form: strategy names."},
            {
                "type": "object",
                "properties": {
                    "strategy": {"type": "string", "examples": strategies},
                    "max_retries": {"type": "integer", "minimum": 0},
                    "retries": {"type": "integer", "minimum": 0},
                    "backoff": {"oneOf": [
                        {"enum": ["immediate", "none", "linear", "fixed", "exponential"]},
                        {"type": "object", "properties": {
                            "type": {"type": "string"}, "kind": {"type": "string"},
                            "base": {"$ref": "#/$defs/duration"}, "base_delay": {"$ref": "#/$defs/duration"},
                            "max": {"$ref": "#/$defs/duration"}, "max_delay": {"$ref": "#/$defs/duration"},
                            "jitter": {"$ref": "#/$defs/flag"}
                        }, "additionalProperties": false}
                    ]},
                    "base_delay": {"$ref": "#/$defs/duration"},
                    "max_delay": {"$ref": "#/$defs/duration"},
                    "jitter": {"$ref": "#/$defs/flag"},
                    "fallback": {"type": "string", "description": "A skill (or, with model-switch, a model)."},
                    "escalate_after": {"type": "integer", "minimum": 1},
                    "escalation": {},
                    "continue_on_failure": {"$ref": "#/$defs/flag"},
                    "max_iterations": {"type": "integer", "minimum": 1}
                },
                "additionalProperties": false
            }
        ]
    })
}

fn sandbox() -> Value {
    let mut props = Map::new();
    for key in SANDBOX_KEYS {
        let v = match *key {
            "max_iterations" | "escalate_after" => json!({"type": "integer", "minimum": 1}),
            "regression_check" | "apply" | "network" | "network_disabled" | "auto_fix" => {
                json!({"$ref": "#/$defs/flag"})
            }
            "sandbox" | "sandbox_isolated" => json!({
                "oneOf": [{"$ref": "#/$defs/flag"}, {"enum": ["required", "best-effort", "off"]}]
            }),
            "test_timeout" => json!({"$ref": "#/$defs/duration"}),
            "fixer" => json!({
                "type": "object",
                "properties": {"command": {"type": "string"}, "model": {"$ref": "#/$defs/model"}, "agent": {"enum": ["claude", "codex", "gemini"]}},
                "additionalProperties": false
            }),
            "exclude" => json!({"type": "array", "items": {"type": "string"}}),
            "limits" => json!({"type": "object"}),
            _ => json!({"type": "string"}),
        };
        props.insert((*key).to_owned(), v);
    }
    json!({
        "description": "Settings of the sandboxed test-and-fix loop.",
        "type": "object",
        "properties": props,
        "additionalProperties": false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_the_loader_knows_is_in_the_schema() {
        let s = cascade_schema();
        let stage = &s["$defs"]["stage"]["properties"];
        for f in STAGE_FIELDS {
            assert!(stage.get(*f).is_some(), "stage field {f}");
        }
        let section = &s["$defs"]["section"]["properties"];
        for f in DOC_SECTIONS {
            assert!(section.get(*f).is_some(), "section {f}");
        }
    }
}
