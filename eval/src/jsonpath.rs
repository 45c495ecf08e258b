//! `$.a.b` strings: JSONPath (RFC 9535, via serde_json_path) into the context.
//!
//! A path matching nothing is undefined (an error where a value is needed); matching one
//! node yields that node; matching several yields an array of them in document order.

use serde_json::Value;
use serde_json_path::JsonPath;

use crate::context::Context;
use crate::error::EvalError;
use crate::reference::Reference;

/// Bracket nesting allowed in a path; deeper paths are rejected before the JSONPath parser
/// (which recurses) sees them.
const MAX_NESTING: usize = 64;

/// A parsed JSONPath and its source text.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPathExpr {
    src: String,
    path: JsonPath,
}

impl JsonPathExpr {
    /// True for strings this module owns: the whole string starts with `$.`.
    pub fn applies_to(src: &str) -> bool {
        src.starts_with("$.")
    }

    /// Parses a JSONPath such as `$.score.quality_score` or `$.tests[?@.passed == false]`.
    pub fn parse(src: &str) -> Result<JsonPathExpr, EvalError> {
        let mut depth = 0usize;
        for (offset, c) in src.char_indices() {
            match c {
                '[' | '(' => depth += 1,
                ']' | ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > MAX_NESTING {
                return Err(EvalError::Parse {
                    src: src.to_owned(),
                    offset,
                    message: format!("path nests deeper than {MAX_NESTING} levels"),
                });
            }
        }
        let path = JsonPath::parse(&quote_dashed_names(src)).map_err(|e| EvalError::Parse {
            src: src.to_owned(),
            offset: e.position(),
            message: format!("invalid JSONPath: {}", e.message()),
        })?;
        Ok(JsonPathExpr {
            src: src.to_owned(),
            path,
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// The value at the path (see the module doc for several matches).
    pub fn query(&self, ctx: &Context) -> Result<Value, EvalError> {
        let nodes = self.path.query(ctx.as_json()).all();
        match nodes.as_slice() {
            [] => Err(EvalError::Undefined {
                reference: self.src.clone(),
                detail: "the path matches nothing in the context".to_owned(),
            }),
            [one] => Ok((*one).clone()),
            many => Ok(Value::Array(many.iter().map(|v| (*v).clone()).collect())),
        }
    }

    /// True if the path matches at least one node.
    pub fn exists(&self, ctx: &Context) -> bool {
        !self.path.query(ctx.as_json()).is_empty()
    }

    /// The leading plain `.name` segments as a reference (`$.a.b[0].c` -> root `a`, rest
    /// `[b]`), or `None` when the path does not start with a plain name.
    pub fn reference(&self) -> Option<Reference> {
        let body = self.src.strip_prefix("$.")?;
        let mut names = Vec::new();
        for part in body.split('.') {
            let end = part.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'));
            let name = &part[..end.unwrap_or(part.len())];
            if !name.is_empty() {
                names.push(name.to_owned());
            }
            if end.is_some() || name.is_empty() {
                break;
            }
        }
        let (root, rest) = names.split_first()?;
        Some(Reference {
            text: self.src.clone(),
            root: root.clone(),
            rest: rest.to_vec(),
            bare: false,
        })
    }
}

/// RFC 9535 shorthand names cannot contain `-`, but stage ids often do: the leading plain
/// `.name` segments that need it are rewritten to `['name']` (`$.quality-checks.score` ->
/// `$['quality-checks'].score`). The rest of the path is left as written.
fn quote_dashed_names(src: &str) -> String {
    let Some(mut rest) = src.strip_prefix('$') else {
        return src.to_owned();
    };
    let mut out = String::from("$");
    while let Some(after_dot) = rest.strip_prefix('.') {
        let end = after_dot
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(after_dot.len());
        let name = &after_dot[..end];
        if name.is_empty() {
            break;
        }
        if name.contains('-') {
            out.push_str(&format!("['{name}']"));
        } else {
            out.push('.');
            out.push_str(name);
        }
        rest = &after_dot[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ctx() -> Context {
        let mut ctx = Context::new(json!({"t": 80}), json!({}), json!({"name": "c"}));
        ctx.set_stage_output("quality-checks", json!({"issues": ["x"]}));
        ctx.set_stage_output(
            "score",
            json!({"quality_score": 91, "tests": [{"ok": true}, {"ok": false}]}),
        );
        ctx
    }

    #[test]
    fn queries() {
        let q = |p: &str| JsonPathExpr::parse(p).and_then(|p| p.query(&ctx()));
        assert_eq!(q("$.score.quality_score"), Ok(json!(91)));
        assert_eq!(q("$.score.tests[*].ok"), Ok(json!([true, false])));
        assert_eq!(q("$.inputs.t"), Ok(json!(80)));
        assert_eq!(q("$.quality-checks.issues[0]"), Ok(json!("x")));
        assert!(q("$.score.nope").is_err_and(|e| e.is_undefined()));
        assert!(matches!(
            JsonPathExpr::parse("$.a[").expect_err("should fail"),
            EvalError::Parse { .. }
        ));
        assert!(JsonPathExpr::parse(&format!("$.a{}", "[".repeat(100))).is_err());
    }

    #[test]
    fn references() {
        let r = |p: &str| JsonPathExpr::parse(p).ok().and_then(|p| p.reference());
        let got = r("$.score.tests[0].ok").expect("has a root");
        assert_eq!(
            (got.root.as_str(), got.rest),
            ("score", vec!["tests".to_owned()])
        );
        assert_eq!(r("$.a-b.c").map(|r| r.rest), Some(vec!["c".to_owned()]));
    }
}
