//! References to the context (`inputs.x`, `analyze.quality_score`, `stage.*.field`, a bare
//! `name`) and how they resolve.
//!
//! [`Reference`] is the load-time view (what the planner checks against known stage ids and
//! inputs); [`PathExpr`] is the parsed path that resolves against a [`Context`]. Resolution
//! is strict: a missing key is an [`EvalError::Undefined`] saying what is missing, never
//! `null`.

use serde_json::Value;

use crate::context::Context;
use crate::error::EvalError;

/// A reference found in a template, expression or condition, for load-time checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// The path as written, e.g. `analyze.quality_score` or `$.a.b`.
    pub text: String,
    /// The first segment: `inputs`, `memory`, `cascade`, a stage id, a var or a bare name.
    pub root: String,
    /// The later field segments in order (`*` kept, array indices left out).
    pub rest: Vec<String>,
    /// True for a single-segment name like `${quality_score}`, which resolves from inputs,
    /// memory, top-level keys and then the outputs of completed stages.
    pub bare: bool,
}

/// One step of a path after its root.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Segment {
    /// `.name`, `."quoted name"` or `["name"]`.
    Field(String),
    /// `[3]` or `.3`.
    Index(usize),
    /// `.*` or `[*]`: the first child that has the rest of the path.
    Wildcard,
}

/// A parsed path: a root name and segments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PathExpr {
    pub(crate) text: String,
    pub(crate) root: String,
    pub(crate) segments: Vec<Segment>,
}

impl PathExpr {
    pub(crate) fn reference(&self) -> Reference {
        let rest = self
            .segments
            .iter()
            .filter_map(|s| match s {
                Segment::Field(f) => Some(f.clone()),
                Segment::Wildcard => Some("*".to_owned()),
                Segment::Index(_) => None,
            })
            .collect();
        Reference {
            text: self.text.clone(),
            root: self.root.clone(),
            rest,
            bare: self.segments.is_empty(),
        }
    }

    fn undefined(&self, detail: String) -> EvalError {
        EvalError::Undefined {
            reference: format!("${{{}}}", self.text),
            detail,
        }
    }

    /// Resolves the path in `ctx`.
    pub(crate) fn resolve<'c>(&self, ctx: &'c Context) -> Result<&'c Value, EvalError> {
        if self.segments.is_empty() {
            return self.resolve_bare(ctx);
        }
        let Some(start) = ctx.top(&self.root) else {
            return Err(self.undefined(format!("no stage output `{}` yet", self.root)));
        };
        walk(start, &self.segments).map_err(|miss| self.undefined(miss.describe(&self.root)))
    }

    /// `${name}`: inputs, memory, top-level keys, then completed stages' outputs (most
    /// recently completed first).
    fn resolve_bare<'c>(&self, ctx: &'c Context) -> Result<&'c Value, EvalError> {
        let name = self.root.as_str();
        let found = ctx
            .top("inputs")
            .and_then(|i| i.get(name))
            .or_else(|| ctx.top("memory").and_then(|m| m.get(name)))
            .or_else(|| ctx.top(name))
            .or_else(|| {
                ctx.completed_recent_first()
                    .find_map(|stage| ctx.top(stage).and_then(|out| out.get(name)))
            });
        found.ok_or_else(|| {
            self.undefined(format!(
                "no input, memory key, stage or completed stage output named `{name}`"
            ))
        })
    }
}

/// Where a walk stopped: the segments that did resolve, and what was missing.
struct Miss {
    prefix: String,
    missing: String,
}

impl Miss {
    fn describe(&self, root: &str) -> String {
        match (root, self.prefix.as_str()) {
            ("inputs", "") => format!("no input {}", self.missing),
            ("memory", "") => format!("no memory key {}", self.missing),
            _ => format!("`{root}{}` has no {}", self.prefix, self.missing),
        }
    }
}

fn seg_text(seg: &Segment) -> String {
    match seg {
        Segment::Field(f) => format!(".{f}"),
        Segment::Index(i) => format!("[{i}]"),
        Segment::Wildcard => ".*".to_owned(),
    }
}

/// Follows `segments` from `value`.
fn walk<'c>(value: &'c Value, segments: &[Segment]) -> Result<&'c Value, Miss> {
    let Some((first, rest)) = segments.split_first() else {
        return Ok(value);
    };
    let next = match first {
        Segment::Field(f) => value.get(f.as_str()),
        Segment::Index(i) => match value {
            Value::Object(map) => map.get(&i.to_string()),
            _ => value.get(*i),
        },
        Segment::Wildcard => {
            let found = match value {
                Value::Object(map) => map.values().find_map(|child| walk(child, rest).ok()),
                Value::Array(items) => items.iter().find_map(|child| walk(child, rest).ok()),
                _ => None,
            };
            return found.ok_or_else(|| {
                let wanted: String = rest.iter().map(seg_text).collect();
                Miss {
                    prefix: String::new(),
                    missing: format!("child with `{}`", wanted.trim_start_matches('.')),
                }
            });
        }
    };
    let Some(next) = next else {
        let missing = match first {
            Segment::Field(f) => format!("field `{f}`"),
            Segment::Index(i) => format!("element [{i}]"),
            Segment::Wildcard => String::new(),
        };
        return Err(Miss {
            prefix: String::new(),
            missing,
        });
    };
    walk(next, rest).map_err(|mut miss| {
        miss.prefix = format!("{}{}", seg_text(first), miss.prefix);
        miss
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn path(root: &str, segments: Vec<Segment>) -> PathExpr {
        PathExpr {
            text: root.to_owned(),
            root: root.to_owned(),
            segments,
        }
    }

    fn ctx() -> Context {
        let mut ctx = Context::new(
            json!({"q": 1}),
            json!({"k": {"p": 2}}),
            json!({"name": "c"}),
        );
        ctx.set_stage_output("old", json!({"score": 10, "only_old": true}));
        ctx.set_stage_output("new", json!({"score": 20, "list": [{"x": 5}]}));
        ctx.set_stage_output(
            "branchy",
            json!({"branch_taken": "pass", "pass": {"field": "from pass"}}),
        );
        ctx
    }

    #[test]
    fn resolution_table() {
        use Segment::*;
        let f = |s: &str| Field(s.to_owned());
        let cases = [
            (path("q", vec![]), json!(1)),
            (path("k", vec![]), json!({"p": 2})),
            (path("score", vec![]), json!(20)),
            (path("only_old", vec![]), json!(true)),
            (path("old", vec![]), json!({"score": 10, "only_old": true})),
            (path("memory", vec![f("k"), f("p")]), json!(2)),
            (path("new", vec![f("list"), Index(0), f("x")]), json!(5)),
            (
                path("branchy", vec![Wildcard, f("field")]),
                json!("from pass"),
            ),
            (path("branchy", vec![f("branch_taken")]), json!("pass")),
            (path("cascade", vec![f("name")]), json!("c")),
        ];
        for (p, want) in cases {
            assert_eq!(p.resolve(&ctx()), Ok(&want), "{p:?}");
        }
    }

    #[test]
    fn undefined_messages() {
        use Segment::*;
        let f = |s: &str| Field(s.to_owned());
        let cases = [
            (
                path("analyze", vec![f("quality_score")]),
                "no stage output `analyze` yet",
            ),
            (path("inputs", vec![f("zz")]), "no input field `zz`"),
            (
                path("memory", vec![f("k"), f("zz")]),
                "`memory.k` has no field `zz`",
            ),
            (
                path("new", vec![f("list"), Index(3)]),
                "`new.list` has no element [3]",
            ),
            (
                path("branchy", vec![Wildcard, f("nope")]),
                "`branchy` has no child with `nope`",
            ),
            (
                path("nothing", vec![]),
                "no input, memory key, stage or completed stage output named `nothing`",
            ),
        ];
        for (p, want) in cases {
            match p.resolve(&ctx()) {
                Err(EvalError::Undefined { detail, .. }) => assert_eq!(detail, want),
                other => panic!("{p:?}: {other:?}"),
            }
        }
    }
}
