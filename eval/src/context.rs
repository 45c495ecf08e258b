//! The JSON context every template, condition and jq filter reads.
//!
//! Shape: `{"inputs": {..}, "memory": {..}, "cascade": {..}, "<stage_id>": outputs, ..,
//! "<var>": value, ..}`. Besides the object the context remembers the order in which stages
//! completed (most recent last), which is what a bare `${name}` searches after inputs, memory
//! and top-level keys. `inputs`, `memory` and `cascade` are reserved: the planner rejects
//! them as stage ids, so setting a stage output under those names is the caller's mistake.

use serde_json::{Map, Value};

/// The context: one JSON object plus the completion order of stages.
#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    root: Value,
    completed: Vec<String>,
}

impl Default for Context {
    fn default() -> Self {
        Context::new(Value::Null, Value::Null, Value::Null)
    }
}

/// `null` becomes `{}`; anything else is kept as given.
fn object_or_empty(v: Value) -> Value {
    if v.is_null() {
        Value::Object(Map::new())
    } else {
        v
    }
}

impl Context {
    /// A context with the given inputs, memory and cascade metadata (each normally an
    /// object; `null` is taken as `{}`) and no stage outputs yet.
    pub fn new(inputs: Value, memory: Value, cascade: Value) -> Self {
        let mut root = Map::new();
        root.insert("inputs".to_owned(), object_or_empty(inputs));
        root.insert("memory".to_owned(), object_or_empty(memory));
        root.insert("cascade".to_owned(), object_or_empty(cascade));
        Context {
            root: Value::Object(root),
            completed: Vec::new(),
        }
    }

    /// The root object. `root` is built as an object in [`Context::new`] and never replaced,
    /// so this is always `Some`; the `Option` only spares us a panic path.
    fn map_mut(&mut self) -> Option<&mut Map<String, Value>> {
        self.root.as_object_mut()
    }

    /// Records `outputs` as the outputs of `stage_id` and makes it the most recently
    /// completed stage (moving it there if it completed before, e.g. in a loop).
    pub fn set_stage_output(&mut self, stage_id: &str, outputs: Value) {
        if let Some(map) = self.map_mut() {
            map.insert(stage_id.to_owned(), outputs);
        }
        self.completed.retain(|s| s != stage_id);
        self.completed.push(stage_id.to_owned());
    }

    /// Forgets the outputs of `stage_id` (a loop re-running it, a rollback).
    pub fn remove_stage_output(&mut self, stage_id: &str) {
        if self.completed.iter().any(|s| s == stage_id) {
            if let Some(map) = self.map_mut() {
                map.shift_remove(stage_id);
            }
            self.completed.retain(|s| s != stage_id);
        }
    }

    /// Sets `memory.<key>`.
    pub fn set_memory(&mut self, key: &str, value: Value) {
        let Some(root) = self.map_mut() else { return };
        let memory = root
            .entry("memory")
            .or_insert_with(|| Value::Object(Map::new()));
        if !memory.is_object() {
            *memory = Value::Object(Map::new());
        }
        if let Value::Object(map) = memory {
            map.insert(key.to_owned(), value);
        }
    }

    /// Removes `memory.<key>`.
    pub fn remove_memory(&mut self, key: &str) {
        if let Some(Value::Object(map)) = self.map_mut().and_then(|m| m.get_mut("memory")) {
            map.shift_remove(key);
        }
    }

    /// Sets an extra top-level variable: `timestamp`, `failed_stage`, `error_message`,
    /// `item`, `item_index`, `iteration`, ...
    pub fn set_var(&mut self, name: &str, value: Value) {
        if let Some(map) = self.map_mut() {
            map.insert(name.to_owned(), value);
        }
    }

    /// Removes an extra top-level variable set with [`Context::set_var`].
    pub fn remove_var(&mut self, name: &str) {
        if let Some(map) = self.map_mut() {
            map.shift_remove(name);
        }
    }

    /// The whole context as one JSON object.
    pub fn as_json(&self) -> &Value {
        &self.root
    }

    /// A top-level key: `inputs`, `memory`, `cascade`, a stage id or a var.
    pub fn top(&self, key: &str) -> Option<&Value> {
        self.root.get(key)
    }

    /// Ids of completed stages, most recently completed first.
    pub fn completed_recent_first(&self) -> impl Iterator<Item = &str> {
        self.completed.iter().rev().map(String::as_str)
    }

    /// True if `stage_id` has recorded outputs.
    pub fn has_stage(&self, stage_id: &str) -> bool {
        self.completed.iter().any(|s| s == stage_id)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn shape_and_completion_order() {
        let mut ctx = Context::new(json!({"x": 1}), json!(null), json!({"name": "demo"}));
        ctx.set_stage_output("a", json!({"v": 1}));
        ctx.set_stage_output("b", json!({"v": 2}));
        ctx.set_stage_output("a", json!({"v": 3}));
        ctx.set_memory("k", json!("m"));
        ctx.set_var("timestamp", json!("2024-01-01T00:00:00Z"));
        assert_eq!(
            ctx.as_json(),
            &json!({"inputs": {"x": 1}, "memory": {"k": "m"}, "cascade": {"name": "demo"},
                    "a": {"v": 3}, "b": {"v": 2}, "timestamp": "2024-01-01T00:00:00Z"})
        );
        assert_eq!(ctx.completed_recent_first().collect::<Vec<_>>(), ["a", "b"]);
        ctx.remove_stage_output("a");
        ctx.remove_memory("k");
        assert_eq!(ctx.completed_recent_first().collect::<Vec<_>>(), ["b"]);
        assert_eq!(ctx.top("a"), None);
        assert_eq!(ctx.top("memory"), Some(&json!({})));
        assert!(ctx.has_stage("b"));
    }
}
