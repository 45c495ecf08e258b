//! Conditions: expression strings, booleans, the five structured condition objects, and
//! `all`/`any` combinations.
//!
//! ```text
//! "${a} >= 80 AND ${b}"                        expression string (see `Expr`)
//! "$.a.b"                                      JSONPath, truthiness of its value
//! true / false                                 constant
//! {left, operator, right}                      comparison (also with type: comparison)
//! {type: threshold, metric, threshold, comparison: > < >= <= (default >)}
//! {type: exists, path: "$.a.b" | "a.b" | "${a.b}"}   never an undefined error
//! {type: regex, value, pattern}                pattern compiled at parse time
//! {type: custom, script: "jq '<filter>'"}      jq filter run in-process
//! {all: [..]} / {any: [..]} / [..] (= all)
//! ```
//!
//! Operands (`left`, `right`, `metric`, `threshold`, `value`): a string starting with `$.`
//! is a JSONPath, a string containing `${` a template, anything else a literal. Everything
//! is parsed and compiled in [`Condition::from_json`], so a bad condition is a load error.

use serde_json::{Map, Value};

use crate::context::Context;
use crate::error::EvalError;
use crate::expr::Expr;
use crate::jq::JqFilter;
use crate::jsonpath::JsonPathExpr;
use crate::reference::Reference;
use crate::template::Template;
pub use crate::value::CmpOp;
use crate::value::{Pattern, truthy};

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Const(bool),
    Expr(Expr),
    JsonPath(JsonPathExpr),
    Compare {
        left: Operand,
        op: CmpOp,
        right: Operand,
    },
    Exists(ExistsPath),
    Regex {
        value: Operand,
        pattern: Pattern,
    },
    Custom(JqFilter),
    All(Vec<Condition>),
    Any(Vec<Condition>),
}

#[derive(Debug, Clone, PartialEq)]
enum ExistsPath {
    JsonPath(JsonPathExpr),
    Expr(Expr),
}

/// A value in a structured condition: JSONPath, template or literal.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    JsonPath(JsonPathExpr),
    Template(Template),
    Literal(Value),
}

impl Operand {
    fn from_json(v: &Value) -> Result<Operand, EvalError> {
        Ok(match v {
            Value::String(s) if JsonPathExpr::applies_to(s) => {
                Operand::JsonPath(JsonPathExpr::parse(s)?)
            }
            Value::String(s) if s.contains("${") => Operand::Template(Template::parse(s)?),
            other => Operand::Literal(other.clone()),
        })
    }

    fn value(&self, ctx: &Context) -> Result<Value, EvalError> {
        match self {
            Operand::JsonPath(p) => p.query(ctx),
            Operand::Template(t) => t.render(ctx),
            Operand::Literal(v) => Ok(v.clone()),
        }
    }

    fn references(&self) -> Vec<Reference> {
        match self {
            Operand::JsonPath(p) => p.reference().into_iter().collect(),
            Operand::Template(t) => t.references(),
            Operand::Literal(_) => Vec::new(),
        }
    }
}

/// Condition types and their fields (besides `type`).
const TYPES: [(&str, &[&str]); 5] = [
    ("comparison", &["left", "operator", "right"]),
    ("threshold", &["metric", "threshold", "comparison"]),
    ("exists", &["path"]),
    ("regex", &["value", "pattern"]),
    ("custom", &["script"]),
];

impl Condition {
    fn new(kind: Kind) -> Self {
        Condition { kind }
    }

    /// A condition that is always `value`.
    pub fn constant(value: bool) -> Self {
        Condition::new(Kind::Const(value))
    }

    /// The string form: an expression (`${a} >= 80 AND ${b}`), or a whole `$.a.b` JSONPath.
    pub fn parse_str(src: &str) -> Result<Condition, EvalError> {
        if JsonPathExpr::applies_to(src.trim()) {
            return Ok(Condition::new(Kind::JsonPath(JsonPathExpr::parse(
                src.trim(),
            )?)));
        }
        Expr::parse(src).map(|e| Condition::new(Kind::Expr(e)))
    }

    /// Any form from a cascade file: a string, a boolean, a list (all must hold) or an
    /// object (structured, or `{all: [..]}` / `{any: [..]}`). Errors name the field.
    pub fn from_json(v: &Value) -> Result<Condition, EvalError> {
        match v {
            Value::String(s) => Condition::parse_str(s),
            Value::Bool(b) => Ok(Condition::constant(*b)),
            Value::Array(items) => list(items).map(|c| Condition::new(Kind::All(c))),
            Value::Object(map) => from_object(map),
            other => Err(EvalError::Invalid {
                what: "condition".to_owned(),
                message: format!(
                    "expected a string, a boolean, a list or an object, not {}",
                    crate::value::type_name(other)
                ),
            }),
        }
    }

    /// Evaluates to a boolean (condition truthiness for expressions and paths).
    pub fn evaluate(&self, ctx: &Context) -> Result<bool, EvalError> {
        match &self.kind {
            Kind::Const(b) => Ok(*b),
            Kind::Expr(e) => e.eval_bool(ctx),
            Kind::JsonPath(p) => p.query(ctx).map(|v| truthy(&v)),
            Kind::Compare { left, op, right } => op.apply(&left.value(ctx)?, &right.value(ctx)?),
            Kind::Exists(ExistsPath::JsonPath(p)) => Ok(p.exists(ctx)),
            Kind::Exists(ExistsPath::Expr(e)) => match e.eval(ctx) {
                Ok(_) => Ok(true),
                Err(err) if err.is_undefined() => Ok(false),
                Err(err) => Err(err),
            },
            Kind::Regex { value, pattern } => Ok(pattern.is_match(&value.value(ctx)?)),
            Kind::Custom(filter) => filter.evaluate(ctx),
            Kind::All(items) => {
                for c in items {
                    if !c.evaluate(ctx)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Kind::Any(items) => {
                for c in items {
                    if c.evaluate(ctx)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    /// The raw value of an expression or `$.` condition (so `${analyze.verdict}` can select a
    /// branch by name); a boolean for every other form.
    pub fn evaluate_value(&self, ctx: &Context) -> Result<Value, EvalError> {
        match &self.kind {
            Kind::Expr(e) => e.eval(ctx),
            Kind::JsonPath(p) => p.query(ctx),
            _ => self.evaluate(ctx).map(Value::Bool),
        }
    }

    /// Context references, for load-time checks. `exists` paths are left out (they may
    /// legitimately be missing) and jq filters are not analysed.
    pub fn references(&self) -> Vec<Reference> {
        match &self.kind {
            Kind::Const(_) | Kind::Exists(_) | Kind::Custom(_) => Vec::new(),
            Kind::Expr(e) => e.references(),
            Kind::JsonPath(p) => p.reference().into_iter().collect(),
            Kind::Compare { left, right, .. } => {
                let mut refs = left.references();
                refs.extend(right.references());
                refs
            }
            Kind::Regex { value, .. } => value.references(),
            Kind::All(items) | Kind::Any(items) => {
                items.iter().flat_map(Condition::references).collect()
            }
        }
    }
}

fn list(items: &[Value]) -> Result<Vec<Condition>, EvalError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| Condition::from_json(item).map_err(|e| e.in_field(format!("[{i}]"))))
        .collect()
}

fn from_object(map: &Map<String, Value>) -> Result<Condition, EvalError> {
    for (key, combine) in [("all", Kind::All as fn(_) -> _), ("any", Kind::Any)] {
        if let Some(v) = map.get(key) {
            check_fields(map, &[key], None)?;
            let Value::Array(items) = v else {
                return Err(invalid("a list of conditions", v).in_field(key));
            };
            return list(items)
                .map(|c| Condition::new(combine(c)))
                .map_err(|e| e.in_field(key));
        }
    }
    let ty = match map.get("type") {
        None => "comparison",
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(invalid("a condition type name", other).in_field("type")),
    };
    let Some((ty, fields)) = TYPES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(ty.trim()))
    else {
        let names: Vec<&str> = TYPES.iter().map(|(n, _)| *n).collect();
        let hint = crate::suggest::did_you_mean(ty, names.iter().copied())
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(EvalError::Invalid {
            what: format!("condition type `{ty}`"),
            message: format!("expected one of {}{hint}", names.join(", ")),
        }
        .in_field("type"));
    };
    check_fields(map, fields, Some(ty))?;
    let kind = match *ty {
        "comparison" => Kind::Compare {
            left: operand(map, "left")?,
            op: operator(map, "operator", None)?,
            right: operand(map, "right")?,
        },
        "threshold" => Kind::Compare {
            left: operand(map, "metric")?,
            op: operator(map, "comparison", Some(CmpOp::Gt))?,
            right: operand(map, "threshold")?,
        },
        "exists" => {
            Kind::Exists(exists_path(required_str(map, "path")?).map_err(|e| e.in_field("path"))?)
        }
        "regex" => Kind::Regex {
            value: operand(map, "value")?,
            pattern: Pattern::compile(required_str(map, "pattern")?)
                .map_err(|e| e.in_field("pattern"))?,
        },
        _ => Kind::Custom(
            JqFilter::parse(required_str(map, "script")?).map_err(|e| e.in_field("script"))?,
        ),
    };
    Ok(Condition::new(kind))
}

fn invalid(expected: &str, got: &Value) -> EvalError {
    EvalError::Invalid {
        what: format!("{} value", crate::value::type_name(got)),
        message: format!("expected {expected}"),
    }
}

fn required<'m>(map: &'m Map<String, Value>, field: &str) -> Result<&'m Value, EvalError> {
    map.get(field).ok_or_else(|| EvalError::MissingField {
        field: field.to_owned(),
    })
}

fn required_str<'m>(map: &'m Map<String, Value>, field: &str) -> Result<&'m str, EvalError> {
    match required(map, field)? {
        Value::String(s) => Ok(s),
        other => Err(invalid("a string", other).in_field(field)),
    }
}

fn operand(map: &Map<String, Value>, field: &str) -> Result<Operand, EvalError> {
    Operand::from_json(required(map, field)?).map_err(|e| e.in_field(field))
}

/// Reads a comparison operator; threshold conditions (`default` given) take only orderings.
fn operator(
    map: &Map<String, Value>,
    field: &str,
    default: Option<CmpOp>,
) -> Result<CmpOp, EvalError> {
    let raw = match (map.get(field), default) {
        (None, Some(op)) => return Ok(op),
        (None, None) => {
            return Err(EvalError::MissingField {
                field: field.to_owned(),
            });
        }
        (Some(Value::String(s)), _) => s,
        (Some(other), _) => return Err(invalid("an operator string", other).in_field(field)),
    };
    let expected = if default.is_some() {
        "> < >= <="
    } else {
        "== != > < >= <= contains"
    };
    match CmpOp::parse(raw) {
        Some(op) if default.is_none() || op.is_ordering() => Ok(op),
        _ => Err(EvalError::Invalid {
            what: format!("operator `{raw}`"),
            message: format!("expected one of {expected}"),
        }
        .in_field(field)),
    }
}

fn exists_path(path: &str) -> Result<ExistsPath, EvalError> {
    let path = path.trim();
    if JsonPathExpr::applies_to(path) {
        return JsonPathExpr::parse(path).map(ExistsPath::JsonPath);
    }
    Expr::parse(path).map(ExistsPath::Expr)
}

/// Rejects fields other than `type` and `allowed`, suggesting a close or cross-type match.
fn check_fields(
    map: &Map<String, Value>,
    allowed: &[&str],
    ty: Option<&str>,
) -> Result<(), EvalError> {
    for key in map.keys() {
        if key == "type" && ty.is_some() || allowed.contains(&key.as_str()) {
            continue;
        }
        let suggestion = crate::suggest::did_you_mean(key, allowed.iter().copied())
            .map(str::to_owned)
            .or_else(|| {
                let other = TYPES
                    .iter()
                    .find(|(_, fields)| fields.contains(&key.as_str()))?;
                Some(format!("type: {}", other.0))
            });
        return Err(EvalError::UnknownField {
            field: key.clone(),
            suggestion,
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "condition_tests.rs"]
mod tests;
