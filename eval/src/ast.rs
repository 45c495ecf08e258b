//! The tree a parsed expression is: built by [`crate::expr`]'s parser, walked by
//! [`crate::eval`] (and for references by `expr`), so neither of those two
//! imports the other for it.

use serde_json::Value;

use crate::reference::PathExpr;
use crate::value::{Arith, CmpOp, Pattern};

/// A node of a parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Lit(Value),
    Path(PathExpr),
    List(Vec<Node>),
    Not(Box<Node>),
    Neg(Box<Node>),
    Arith(Arith, Box<Node>, Box<Node>),
    Cmp(CmpOp, Box<Node>, Box<Node>),
    /// `needle in haystack`
    In(Box<Node>, Box<Node>),
    /// `value matches pattern`; a literal pattern is compiled at parse time.
    Matches(Box<Node>, Box<Node>, Option<Pattern>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
}
