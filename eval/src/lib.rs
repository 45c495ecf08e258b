//! `cascade-eval`: the `${...}` template and condition language of cascade files.
//!
//! Pure: no I/O, no clock, no randomness, never a shell. Four parts, all reading one JSON
//! [`Context`] (`{"inputs", "memory", "cascade", "<stage_id>": outputs, vars..}`):
//!
//! 1. [`Template`]: `${expr}` inside strings (a string that is exactly one `${expr}` keeps
//!    the value's JSON type; a whole `$.a.b` string is a JSONPath).
//! 2. [`Expr`]: the expression language (paths, literals, arithmetic, comparisons,
//!    `contains`/`in`/`matches`, `AND`/`OR`/`NOT`).
//! 3. [`Condition`]: expression strings, booleans and the structured condition objects
//!    (comparison, threshold, exists, regex, custom, plus `all`/`any` lists).
//! 4. custom conditions: a jq filter compiled and run in-process with jaq.
//!
//! Everything parses up front so a cascade file's mistakes surface at load time; the
//! [`Reference`]s of every template and condition let the planner check roots against
//! known stage ids and inputs before a run starts.

mod ast;
mod condition;
mod context;
mod error;
mod eval;
mod expr;
mod jq;
mod jsonpath;
mod lexer;
mod reference;
pub mod suggest;
mod template;
mod value;

pub use condition::{CmpOp, Condition};
pub use context::Context;
pub use error::EvalError;
pub use expr::{Expr, MAX_DEPTH};
pub use jq::JqFilter;
pub use jsonpath::JsonPathExpr;
pub use reference::Reference;
pub use template::{Template, render_value, value_references};
pub use value::{stringify, truthy};
