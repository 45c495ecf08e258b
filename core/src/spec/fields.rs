//! Typed access to a mapping node's fields; every misuse becomes a
//! diagnostic naming the field path, and reading carries on.

use std::time::Duration;

use serde_json::{Map, Value};

use super::diag::Diagnostic;
use super::yaml::{Kind, Loc, Node};
use crate::duration::parse_duration;
use crate::suggest::suggestion;

/// Collects diagnostics while the normaliser walks a document.
pub struct Reader {
    pub diags: Vec<Diagnostic>,
}

/// A mapping whose keys were checked against the allowed set.
pub struct Fields<'a> {
    pub node: &'a Node,
    pub path: String,
    entries: Vec<(&'a str, &'a Node, &'a Loc)>,
}

impl<'a> Fields<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, v, _)| *v)
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn key_loc(&self, key: &str) -> Option<&'a Loc> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, _, l)| *l)
    }

    /// The first of several aliases present, with the name used.
    pub fn first_of(&self, keys: &[&'static str]) -> Option<(&'static str, &'a Node)> {
        keys.iter().find_map(|k| self.get(k).map(|n| (*k, n)))
    }

    pub fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.entries.iter().map(|(k, _, _)| *k)
    }
}

impl Reader {
    pub fn new() -> Self {
        Reader { diags: Vec::new() }
    }

    pub fn error(&mut self, loc: &Loc, field: impl Into<String>, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::error(Some(loc.clone()), field, message));
    }

    pub fn warn(&mut self, loc: &Loc, field: impl Into<String>, message: impl Into<String>) {
        self.diags
            .push(Diagnostic::warning(Some(loc.clone()), field, message));
    }

    pub fn has_errors(&self) -> bool {
        self.diags.iter().any(Diagnostic::is_error)
    }

    /// Checks that `node` is a mapping whose keys are all in `allowed`.
    pub fn fields<'a>(
        &mut self,
        node: &'a Node,
        path: &str,
        what: &str,
        allowed: &[&str],
    ) -> Option<Fields<'a>> {
        let Kind::Map(entries) = &node.kind else {
            self.error(
                &node.loc,
                path,
                format!("{what} must be a mapping, found {}", node.type_name()),
            );
            return None;
        };
        let mut out = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            let Some(key) = k.as_str() else {
                let shown = k.scalar_text().unwrap_or_else(|| "null".into());
                self.error(&k.loc, path, format!("unexpected key `{shown}` in {what}"));
                continue;
            };
            if !allowed.contains(&key) {
                let field = if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                };
                let hint = suggestion(key, allowed.iter().copied());
                self.error(
                    &k.loc,
                    field,
                    format!("unknown field `{key}` in {what}{hint}"),
                );
                continue;
            }
            out.push((key, v, &k.loc));
        }
        Some(Fields {
            node,
            path: path.to_owned(),
            entries: out,
        })
    }

    pub fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match &node.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) => node.scalar_text(),
            _ => {
                self.error(
                    &node.loc,
                    field,
                    format!("expected a string, found {}", node.type_name()),
                );
                None
            }
        }
    }

    pub fn opt_string(&mut self, f: &Fields<'_>, key: &str) -> Option<String> {
        let node = f.get(key)?;
        if matches!(node.kind, Kind::Null) {
            return None;
        }
        self.string(node, &f.field(key))
    }

    pub fn boolean(&mut self, node: &Node, field: &str) -> Option<bool> {
        match &node.kind {
            Kind::Bool(b) => Some(*b),
            Kind::Str(s) => match s.as_str() {
                "enabled" | "yes" | "on" => Some(true),
                "disabled" | "no" | "off" => Some(false),
                _ => {
                    self.error(
                        &node.loc,
                        field,
                        format!("expected true or false, found `{s}`"),
                    );
                    None
                }
            },
            _ => {
                self.error(
                    &node.loc,
                    field,
                    format!("expected true or false, found {}", node.type_name()),
                );
                None
            }
        }
    }

    pub fn opt_bool(&mut self, f: &Fields<'_>, key: &str) -> Option<bool> {
        let node = f.get(key)?;
        self.boolean(node, &f.field(key))
    }

    pub fn uint(&mut self, node: &Node, field: &str, min: u64, max: u64) -> Option<u64> {
        let v = match &node.kind {
            Kind::Int(i) if *i >= 0 => Some(*i as u64),
            Kind::Str(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match v {
            Some(v) if v >= min && v <= max => Some(v),
            Some(v) => {
                self.error(
                    &node.loc,
                    field,
                    format!("{v} is out of range ({min} to {max})"),
                );
                None
            }
            None => {
                let shown = node
                    .scalar_text()
                    .unwrap_or_else(|| node.type_name().to_owned());
                self.error(
                    &node.loc,
                    field,
                    format!("expected a whole number, found `{shown}`"),
                );
                None
            }
        }
    }

    pub fn opt_uint(&mut self, f: &Fields<'_>, key: &str, min: u64, max: u64) -> Option<u64> {
        let node = f.get(key)?;
        self.uint(node, &f.field(key), min, max)
    }

    pub fn duration(&mut self, node: &Node, field: &str) -> Option<Duration> {
        let text = match &node.kind {
            Kind::Int(i) => i.to_string(),
            Kind::Float(x) => x.to_string(),
            Kind::Str(s) => s.clone(),
            _ => {
                self.error(
                    &node.loc,
                    field,
                    format!("expected a duration like `30s`, found {}", node.type_name()),
                );
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(&node.loc, field, e.to_string());
                None
            }
        }
    }

    pub fn opt_duration(&mut self, f: &Fields<'_>, key: &str) -> Option<Duration> {
        let node = f.get(key)?;
        self.duration(node, &f.field(key))
    }

    /// A list of strings; a single string is accepted as a list of one.
    pub fn string_list(&mut self, node: &Node, field: &str) -> Vec<(String, Loc)> {
        match &node.kind {
            Kind::Null => Vec::new(),
            Kind::Str(s) => vec![(s.clone(), node.loc.clone())],
            Kind::Seq(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    self.string(item, &format!("{field}[{i}]"))
                        .map(|s| (s, item.loc.clone()))
                })
                .collect(),
            _ => {
                self.error(
                    &node.loc,
                    field,
                    format!("expected a list of names, found {}", node.type_name()),
                );
                Vec::new()
            }
        }
    }

    pub fn opt_string_list(&mut self, f: &Fields<'_>, key: &str) -> Vec<String> {
        match f.get(key) {
            Some(n) => self
                .string_list(n, &f.field(key))
                .into_iter()
                .map(|(s, _)| s)
                .collect(),
            None => Vec::new(),
        }
    }

    /// A mapping of values (stage inputs): kept as JSON, templates inside.
    pub fn value_map(&mut self, node: &Node, field: &str) -> Map<String, Value> {
        match &node.kind {
            Kind::Null => Map::new(),
            Kind::Map(_) => match node.to_json() {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            _ => {
                self.error(
                    &node.loc,
                    field,
                    format!(
                        "expected a mapping of names to values, found {}",
                        node.type_name()
                    ),
                );
                Map::new()
            }
        }
    }

    /// One of the named choices, with a did-you-mean when it is close.
    pub fn choice<T>(
        &mut self,
        node: &Node,
        field: &str,
        names: &[&str],
        parse: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let s = self.string(node, field)?;
        match parse(&s) {
            Some(v) => Some(v),
            None if s.contains('|') => {
                // The seed's definition template writes `a | b | c` for "one of".
                self.error(
                    &node.loc,
                    field,
                    format!(
                        "`{s}` lists alternatives (a template placeholder); choose one of: {}",
                        names.join(", ")
                    ),
                );
                None
            }
            None => {
                let hint = suggestion(&s, names.iter().copied());
                self.error(
                    &node.loc,
                    field,
                    format!(
                        "unknown value `{s}` (expected one of: {}){hint}",
                        names.join(", ")
                    ),
                );
                None
            }
        }
    }
}
