//! Operations on JSON values shared by expressions and structured conditions: truthiness,
//! equality, ordering, `contains`, arithmetic and stringification.
//!
//! Invariants: numbers compare numerically (`1 == 1.0`); a number and a string that parses
//! as a number compare as numbers; ordering between any other mix of types is a
//! [`EvalError::Type`] naming both types, never an arbitrary answer.

use std::cmp::Ordering;

use serde_json::{Number, Value};

use crate::error::EvalError;

/// The name of a JSON type, for error messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Condition truthiness: false, null, 0, "", [], {} and the strings "false", "no", "off",
/// "0" (any case) are false; everything else is true.
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => {
            let s = s.trim();
            !(s.is_empty()
                || ["false", "no", "off", "0"]
                    .iter()
                    .any(|f| s.eq_ignore_ascii_case(f)))
        }
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Strings as they are, everything else as compact JSON: how a value is spliced into text.
pub fn stringify(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A number, or a string that parses as one.
fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// Structural equality where numbers compare by value (`1 == 1.0`).
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_eq(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn num_eq(x: &Number, y: &Number) -> bool {
    match (x.as_i64(), y.as_i64()) {
        (Some(a), Some(b)) => a == b,
        _ => x.as_f64() == y.as_f64(),
    }
}

/// `==` of the language: [`json_eq`], plus number-vs-numeric-string equality.
pub(crate) fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::String(_)) | (Value::String(_), Value::Number(_)) => {
            match (as_number(a), as_number(b)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            }
        }
        _ => json_eq(a, b),
    }
}

/// Ordering for `< > <= >=`: numbers (or number vs numeric string) numerically, strings
/// lexically, anything else a type error.
pub(crate) fn order(a: &Value, b: &Value, op: &str) -> Result<Ordering, EvalError> {
    let mismatch = || {
        EvalError::type_error(format!(
            "cannot compare {} with {} using `{op}`",
            describe(a),
            describe(b)
        ))
    };
    match (a, b) {
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Ok(x.cmp(&y)),
            _ => cmp_f64(x.as_f64(), y.as_f64()).ok_or_else(mismatch),
        },
        (Value::Number(_), Value::String(_)) | (Value::String(_), Value::Number(_)) => {
            cmp_f64(as_number(a), as_number(b)).ok_or_else(mismatch)
        }
        _ => Err(mismatch()),
    }
}

fn cmp_f64(a: Option<f64>, b: Option<f64>) -> Option<Ordering> {
    a?.partial_cmp(&b?)
}

/// A type name plus a short rendering of the value, e.g. `string "abc"`.
fn describe(v: &Value) -> String {
    let shown = v.to_string();
    if shown.chars().count() > 40 {
        type_name(v).to_owned()
    } else {
        format!("{} {shown}", type_name(v))
    }
}

/// `haystack contains needle`: substring, array element or object key.
pub(crate) fn contains(haystack: &Value, needle: &Value) -> Result<bool, EvalError> {
    match (haystack, needle) {
        (Value::String(h), Value::String(n)) => Ok(h.contains(n.as_str())),
        (Value::String(h), Value::Number(_) | Value::Bool(_)) => Ok(h.contains(&stringify(needle))),
        (Value::Array(items), _) => Ok(items.iter().any(|item| loose_eq(item, needle))),
        (Value::Object(map), Value::String(key)) => Ok(map.contains_key(key)),
        _ => Err(EvalError::type_error(format!(
            "cannot test whether {} contains {}",
            describe(haystack),
            describe(needle)
        ))),
    }
}

/// Binary arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl Arith {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Arith::Add => "+",
            Arith::Sub => "-",
            Arith::Mul => "*",
            Arith::Div => "/",
            Arith::Rem => "%",
        }
    }
}

/// Applies an arithmetic operator. `+` also concatenates strings and arrays; numeric strings
/// count as numbers otherwise.
pub(crate) fn arith(op: Arith, a: &Value, b: &Value) -> Result<Value, EvalError> {
    if op == Arith::Add {
        match (a, b) {
            (Value::String(x), Value::String(y)) => return Ok(Value::String(format!("{x}{y}"))),
            (Value::Array(x), Value::Array(y)) => {
                return Ok(Value::Array(x.iter().chain(y).cloned().collect()));
            }
            _ => {}
        }
    }
    let (Some(x), Some(y)) = (as_number(a), as_number(b)) else {
        return Err(EvalError::type_error(format!(
            "cannot apply `{}` to {} and {}",
            op.symbol(),
            describe(a),
            describe(b)
        )));
    };
    if let (Some(i), Some(j)) = (as_int(a), as_int(b))
        && let Some(r) = int_arith(op, i, j)
    {
        return Ok(Value::from(r));
    }
    if matches!(op, Arith::Div | Arith::Rem) && y == 0.0 {
        return Err(EvalError::Arithmetic {
            message: format!("division by zero in `{x} {} {y}`", op.symbol()),
        });
    }
    let r = match op {
        Arith::Add => x + y,
        Arith::Sub => x - y,
        Arith::Mul => x * y,
        Arith::Div => x / y,
        Arith::Rem => x % y,
    };
    float(r)
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Exact integer arithmetic, or `None` to fall back to floats (overflow, inexact division,
/// division by zero which the float path reports).
fn int_arith(op: Arith, i: i64, j: i64) -> Option<i64> {
    match op {
        Arith::Add => i.checked_add(j),
        Arith::Sub => i.checked_sub(j),
        Arith::Mul => i.checked_mul(j),
        Arith::Div => i
            .checked_rem(j)
            .filter(|r| *r == 0)
            .and_then(|_| i.checked_div(j)),
        Arith::Rem => i.checked_rem(j),
    }
}

/// A finite float as a JSON number (integral values stay floats: `2.0`).
pub(crate) fn float(f: f64) -> Result<Value, EvalError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| EvalError::Arithmetic {
            message: format!("arithmetic result {f} is not a finite number"),
        })
}

/// Unary minus.
pub(crate) fn negate(v: &Value) -> Result<Value, EvalError> {
    if let Some(i) = as_int(v).and_then(i64::checked_neg) {
        return Ok(Value::from(i));
    }
    match as_number(v) {
        Some(f) => float(-f),
        None => Err(EvalError::type_error(format!(
            "cannot negate {}",
            describe(v)
        ))),
    }
}

/// A comparison operator, shared by expressions and structured conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `<`
    Lt,
    /// `>=`
    Ge,
    /// `<=`
    Le,
    /// `contains`: substring, array element or object key.
    Contains,
}

impl CmpOp {
    /// The operator as written in a cascade file.
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Gt => ">",
            CmpOp::Lt => "<",
            CmpOp::Ge => ">=",
            CmpOp::Le => "<=",
            CmpOp::Contains => "contains",
        }
    }

    /// Parses an operator: the symbols, `contains`, and the words `eq ne gt lt ge gte le
    /// lte` (any case).
    pub fn parse(s: &str) -> Option<CmpOp> {
        let op = match s.trim().to_ascii_lowercase().as_str() {
            "==" | "eq" => CmpOp::Eq,
            "!=" | "ne" => CmpOp::Ne,
            ">" | "gt" => CmpOp::Gt,
            "<" | "lt" => CmpOp::Lt,
            ">=" | "ge" | "gte" => CmpOp::Ge,
            "<=" | "le" | "lte" => CmpOp::Le,
            "contains" => CmpOp::Contains,
            _ => return None,
        };
        Some(op)
    }

    /// True for the four ordering operators.
    pub fn is_ordering(self) -> bool {
        matches!(self, CmpOp::Gt | CmpOp::Lt | CmpOp::Ge | CmpOp::Le)
    }

    /// Applies the operator to two values.
    pub fn apply(self, left: &Value, right: &Value) -> Result<bool, EvalError> {
        let ordering = |want: fn(Ordering) -> bool| order(left, right, self.symbol()).map(want);
        match self {
            CmpOp::Eq => Ok(loose_eq(left, right)),
            CmpOp::Ne => Ok(!loose_eq(left, right)),
            CmpOp::Gt => ordering(Ordering::is_gt),
            CmpOp::Lt => ordering(Ordering::is_lt),
            CmpOp::Ge => ordering(Ordering::is_ge),
            CmpOp::Le => ordering(Ordering::is_le),
            CmpOp::Contains => contains(left, right),
        }
    }
}

/// A compiled regular expression; equal when the patterns are equal.
#[derive(Debug, Clone)]
pub(crate) struct Pattern(pub(crate) regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Pattern {
    pub(crate) fn compile(pattern: &str) -> Result<Pattern, EvalError> {
        regex::Regex::new(pattern)
            .map(Pattern)
            .map_err(|e| EvalError::Regex {
                pattern: pattern.to_owned(),
                message: e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim()
                    .to_lowercase(),
            })
    }

    /// Matches a string, or the compact JSON of a non-string value.
    pub(crate) fn is_match(&self, v: &Value) -> bool {
        self.0.is_match(&stringify(v))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn truthiness_table() {
        let cases = [
            (json!(false), false),
            (json!(null), false),
            (json!(0), false),
            (json!(0.0), false),
            (json!(""), false),
            (json!([]), false),
            (json!({}), false),
            (json!("false"), false),
            (json!("No"), false),
            (json!("OFF"), false),
            (json!("0"), false),
            (json!(true), true),
            (json!(1), true),
            (json!(-0.5), true),
            (json!("yes"), true),
            (json!("true"), true),
            (json!([0]), true),
            (json!({"a": null}), true),
        ];
        for (v, want) in cases {
            assert_eq!(truthy(&v), want, "{v}");
        }
    }

    #[test]
    fn equality_table() {
        let cases = [
            (json!(1), json!(1.0), true),
            (json!(1), json!("1"), true),
            (json!("1.0"), json!(1), true),
            (json!("a"), json!("a"), true),
            (json!({"a": [1, 2]}), json!({"a": [1.0, 2]}), true),
            (json!(null), json!(false), false),
            (json!("abc"), json!(1), false),
        ];
        for (a, b, want) in cases {
            assert_eq!(loose_eq(&a, &b), want, "{a} == {b}");
        }
    }

    #[test]
    fn ordering_table() {
        assert_eq!(order(&json!(85), &json!(80), ">"), Ok(Ordering::Greater));
        assert_eq!(order(&json!("85"), &json!(80), ">"), Ok(Ordering::Greater));
        assert_eq!(order(&json!(2.5), &json!(3), "<"), Ok(Ordering::Less));
        assert_eq!(order(&json!("b"), &json!("a"), ">"), Ok(Ordering::Greater));
        let err = order(&json!(null), &json!(3), ">")
            .expect_err("should fail")
            .to_string();
        assert_eq!(err, "cannot compare null null with number 3 using `>`");
        assert!(order(&json!(true), &json!(false), "<").is_err());
    }

    #[test]
    fn arithmetic_table() {
        let cases = [
            (Arith::Add, json!(1), json!(2), json!(3)),
            (Arith::Add, json!("a"), json!("b"), json!("ab")),
            (Arith::Add, json!([1]), json!([2]), json!([1, 2])),
            (Arith::Sub, json!(1), json!(2.5), json!(-1.5)),
            (Arith::Mul, json!("3"), json!(2), json!(6)),
            (Arith::Div, json!(7), json!(2), json!(3.5)),
            (Arith::Div, json!(8), json!(2), json!(4)),
            (Arith::Rem, json!(7), json!(4), json!(3)),
        ];
        for (op, a, b, want) in cases {
            assert_eq!(arith(op, &a, &b), Ok(want), "{a} {} {b}", op.symbol());
        }
        assert!(arith(Arith::Div, &json!(1), &json!(0)).is_err());
        assert!(arith(Arith::Rem, &json!(1), &json!(0)).is_err());
        assert!(arith(Arith::Add, &json!("a"), &json!(1)).is_err());
        assert!(arith(Arith::Mul, &json!(i64::MAX), &json!(2)).is_ok());
        assert_eq!(negate(&json!(i64::MIN)), Ok(json!(9.223372036854776e18)));
    }

    #[test]
    fn contains_table() {
        assert_eq!(contains(&json!("hello"), &json!("ell")), Ok(true));
        assert_eq!(contains(&json!([1, 2]), &json!(2.0)), Ok(true));
        assert_eq!(contains(&json!({"k": 1}), &json!("k")), Ok(true));
        assert_eq!(contains(&json!({"k": 1}), &json!("j")), Ok(false));
        assert!(contains(&json!(3), &json!(3)).is_err());
    }
}
