//! `${...}` templates inside strings.
//!
//! - A string that is exactly one `${expr}` renders to the expression's value, keeping its
//!   JSON type (a number stays a number, an object an object).
//! - Otherwise it renders to a string: the literal text with each `${expr}` replaced by its
//!   value (strings as they are, everything else as compact JSON).
//! - `$${` is a literal `${`.
//! - A whole string starting with `$.` is a JSONPath into the context.
//!
//! The end of a `${` is found with the expression lexer, so a `}` inside a quoted string or a
//! nested `${...}` does not close it.

use serde_json::{Map, Value};

use crate::context::Context;
use crate::error::EvalError;
use crate::expr::Expr;
use crate::jsonpath::JsonPathExpr;
use crate::lexer::{Lexer, Tok};
use crate::reference::Reference;
use crate::value::stringify;

/// A parsed template string.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    src: String,
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// No `${`: the text, with `$${` escapes already turned into `${`.
    Literal(String),
    JsonPath(JsonPathExpr),
    /// Exactly one `${expr}`: renders to the value itself.
    Single(Expr),
    Parts(Vec<Part>),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Expr(Expr),
}

impl Template {
    /// Parses a template. Errors carry the byte offset in `src`.
    pub fn parse(src: &str) -> Result<Template, EvalError> {
        if JsonPathExpr::applies_to(src) {
            let kind = Kind::JsonPath(JsonPathExpr::parse(src)?);
            return Ok(Template {
                src: src.to_owned(),
                kind,
            });
        }
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut i = 0;
        while let Some(rest) = src.get(i..).filter(|r| !r.is_empty()) {
            if rest.starts_with("$${") {
                text.push_str("${");
                i += 3;
            } else if rest.starts_with("${") {
                let close = find_close(src, i)?;
                let inner = &src[i + 2..close];
                let expr = Expr::parse(inner).map_err(|e| e.relocate(i + 2, src))?;
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(Part::Expr(expr));
                i = close + 1;
            } else {
                let c = rest.chars().next().unwrap_or('\0');
                text.push(c);
                i += c.len_utf8();
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        let kind = match parts.as_slice() {
            [] => Kind::Literal(String::new()),
            [Part::Text(t)] => Kind::Literal(t.clone()),
            [Part::Expr(e)] => Kind::Single(e.clone()),
            _ => Kind::Parts(parts),
        };
        Ok(Template {
            src: src.to_owned(),
            kind,
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// True if rendering returns the source unchanged: no `${` (escaped or not) and not a
    /// `$.` path.
    pub fn is_literal(&self) -> bool {
        matches!(self.kind, Kind::Literal(_)) && !self.src.contains("${")
    }

    /// Renders against `ctx`. Undefined references are errors, never null.
    pub fn render(&self, ctx: &Context) -> Result<Value, EvalError> {
        match &self.kind {
            Kind::Literal(text) => Ok(Value::String(text.clone())),
            Kind::JsonPath(path) => path.query(ctx),
            Kind::Single(expr) => expr.eval(ctx),
            Kind::Parts(parts) => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Part::Text(t) => out.push_str(t),
                        Part::Expr(e) => out.push_str(&stringify(&e.eval(ctx)?)),
                    }
                }
                Ok(Value::String(out))
            }
        }
    }

    /// Every context reference in the template, in source order.
    pub fn references(&self) -> Vec<Reference> {
        match &self.kind {
            Kind::Literal(_) => Vec::new(),
            Kind::JsonPath(path) => path.reference().into_iter().collect(),
            Kind::Single(expr) => expr.references(),
            Kind::Parts(parts) => parts
                .iter()
                .flat_map(|p| match p {
                    Part::Text(_) => Vec::new(),
                    Part::Expr(e) => e.references(),
                })
                .collect(),
        }
    }
}

/// The byte offset of the `}` closing the `${` at `open`.
fn find_close(src: &str, open: usize) -> Result<usize, EvalError> {
    let unclosed = || EvalError::Parse {
        src: src.to_owned(),
        offset: open,
        message: "unclosed `${`".to_owned(),
    };
    let mut lexer = Lexer::new(src, open + 2);
    let mut depth = 1usize;
    loop {
        match lexer.next_token() {
            Ok(None) => return Err(unclosed()),
            Ok(Some(t)) => match t.tok {
                Tok::DollarBrace => depth += 1,
                Tok::RBrace => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(t.start);
                    }
                }
                _ => {}
            },
            Err(e) if src[open..].contains('}') => {
                return Err(EvalError::Parse {
                    src: src.to_owned(),
                    offset: e.offset,
                    message: e.message,
                });
            }
            Err(_) => return Err(unclosed()),
        }
    }
}

/// Renders every string inside `v` (recursively; object keys are left alone). Errors name
/// the key path where they happened.
pub fn render_value(v: &Value, ctx: &Context) -> Result<Value, EvalError> {
    match v {
        Value::String(s) => Template::parse(s)?.render(ctx),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| render_value(item, ctx).map_err(|e| e.in_field(format!("[{i}]"))))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (k, item) in map {
                out.insert(
                    k.clone(),
                    render_value(item, ctx).map_err(|e| e.in_field(k.clone()))?,
                );
            }
            Ok(Value::Object(out))
        }
        other => Ok(other.clone()),
    }
}

/// The references of every string inside `v`; template parse errors surface here, naming the
/// key path, so they are caught when the cascade file loads.
pub fn value_references(v: &Value) -> Result<Vec<Reference>, EvalError> {
    let mut out = Vec::new();
    collect(v, &mut out)?;
    Ok(out)
}

fn collect(v: &Value, out: &mut Vec<Reference>) -> Result<(), EvalError> {
    match v {
        Value::String(s) => out.extend(Template::parse(s)?.references()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect(item, out).map_err(|e| e.in_field(format!("[{i}]")))?;
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                collect(item, out).map_err(|e| e.in_field(k.clone()))?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
