//! Evaluation of expression trees against a [`Context`].
//!
//! `AND`/`OR` short-circuit and yield booleans; everything else yields the JSON value the
//! operator computes. Recursion is bounded because parsed trees are at most
//! [`crate::MAX_DEPTH`] deep.

use serde_json::Value;

use crate::ast::Node;
use crate::context::Context;
use crate::error::EvalError;
use crate::value::{self, CmpOp, Pattern, truthy};

pub(crate) fn eval(node: &Node, ctx: &Context) -> Result<Value, EvalError> {
    match node {
        Node::Lit(v) => Ok(v.clone()),
        Node::Path(p) => p.resolve(ctx).cloned(),
        Node::List(items) => items
            .iter()
            .map(|n| eval(n, ctx))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Node::Not(n) => Ok(Value::Bool(!truthy(&eval(n, ctx)?))),
        Node::Neg(n) => value::negate(&eval(n, ctx)?),
        Node::Arith(op, a, b) => value::arith(*op, &eval(a, ctx)?, &eval(b, ctx)?),
        Node::Cmp(op, a, b) => op.apply(&eval(a, ctx)?, &eval(b, ctx)?).map(Value::Bool),
        Node::In(needle, haystack) => {
            let needle = eval(needle, ctx)?;
            CmpOp::Contains
                .apply(&eval(haystack, ctx)?, &needle)
                .map(Value::Bool)
        }
        Node::Matches(subject, pattern, compiled) => {
            let subject = eval(subject, ctx)?;
            let matched = match compiled {
                Some(re) => re.is_match(&subject),
                None => match eval(pattern, ctx)? {
                    Value::String(p) => Pattern::compile(&p)?.is_match(&subject),
                    other => {
                        return Err(EvalError::type_error(format!(
                            "`matches` needs a string pattern, not {}",
                            value::type_name(&other)
                        )));
                    }
                },
            };
            Ok(Value::Bool(matched))
        }
        Node::And(a, b) => Ok(Value::Bool(
            truthy(&eval(a, ctx)?) && truthy(&eval(b, ctx)?),
        )),
        Node::Or(a, b) => Ok(Value::Bool(
            truthy(&eval(a, ctx)?) || truthy(&eval(b, ctx)?),
        )),
    }
}
