//! Expressions: the language inside `${...}` and of condition strings, parsed by precedence
//! climbing into a [`Node`] tree.
//!
//! Precedence, loosest first: `OR ||`, `AND &&`, `NOT` (the word, Python-like:
//! `NOT a == b` is `NOT (a == b)`), comparisons `== != > < >= <= contains in matches`,
//! `+ -`, `* / %`, then `!` and unary `-` (C-like, binding tightest). A nested `${X}` is the
//! parenthesised `X`, so `"${a} >= ${inputs.t}"` is one expression. Trees are at most
//! [`MAX_DEPTH`] deep, so neither parsing nor evaluation can overflow the stack.

use serde_json::Value;

use crate::ast::Node;
use crate::context::Context;
use crate::error::EvalError;
use crate::lexer::{LexError, Tok, Token, tokenize};
use crate::reference::{PathExpr, Reference, Segment};
use crate::value::{Arith, CmpOp, Pattern};

/// How deep an expression may nest (parentheses, operators, lists).
pub const MAX_DEPTH: usize = 64;

/// A parsed expression and its source text.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    src: String,
    pub(crate) node: Node,
}

impl Expr {
    /// Parses an expression, e.g. `${a} >= 80 AND ${b} < 3` or `quality < threshold`.
    pub fn parse(src: &str) -> Result<Expr, EvalError> {
        let parse_err = |offset, message| EvalError::Parse {
            src: src.to_owned(),
            offset,
            message,
        };
        let tokens =
            tokenize(src).map_err(|LexError { offset, message }| parse_err(offset, message))?;
        let mut parser = Parser {
            src,
            tokens,
            pos: 0,
        };
        if parser.tokens.is_empty() {
            return Err(parse_err(0, "empty expression".to_owned()));
        }
        let (node, _) = parser.expr(0, 0)?;
        if let Some(t) = parser.peek() {
            let what = parser.describe(t);
            return Err(parse_err(
                t.start,
                format!("unexpected {what} after a complete expression"),
            ));
        }
        Ok(Expr {
            src: src.to_owned(),
            node,
        })
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.src
    }

    /// Evaluates to a JSON value.
    pub fn eval(&self, ctx: &Context) -> Result<Value, EvalError> {
        crate::eval::eval(&self.node, ctx)
    }

    /// Evaluates and applies condition truthiness (see [`crate::truthy`]).
    pub fn eval_bool(&self, ctx: &Context) -> Result<bool, EvalError> {
        self.eval(ctx).map(|v| crate::value::truthy(&v))
    }

    /// Every context reference in the expression, in source order.
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        collect_refs(&self.node, &mut out);
        out
    }
}

fn collect_refs(node: &Node, out: &mut Vec<Reference>) {
    match node {
        Node::Lit(_) => {}
        Node::Path(p) => out.push(p.reference()),
        Node::List(items) => items.iter().for_each(|n| collect_refs(n, out)),
        Node::Not(n) | Node::Neg(n) => collect_refs(n, out),
        Node::Arith(_, a, b)
        | Node::Cmp(_, a, b)
        | Node::In(a, b)
        | Node::Matches(a, b, _)
        | Node::And(a, b)
        | Node::Or(a, b) => {
            collect_refs(a, out);
            collect_refs(b, out);
        }
    }
}

/// Binding powers (left, right) of infix operators.
enum Infix {
    Or,
    And,
    Cmp(CmpOp),
    In,
    Matches,
    Arith(Arith),
}

impl Infix {
    fn binding_power(&self) -> (u8, u8) {
        match self {
            Infix::Or => (1, 2),
            Infix::And => (3, 4),
            Infix::Cmp(_) | Infix::In | Infix::Matches => (5, 6),
            Infix::Arith(Arith::Add | Arith::Sub) => (7, 8),
            Infix::Arith(_) => (9, 10),
        }
    }
}

/// Right binding power of the word `NOT` (takes a comparison).
const NOT_WORD_BP: u8 = 5;
/// Right binding power of `!` and unary `-`.
const UNARY_BP: u8 = 11;

/// Words with a meaning; any case. They cannot be bare names but can be later path segments.
fn keyword(s: &str) -> Option<&'static str> {
    [
        "and", "or", "not", "contains", "in", "matches", "true", "false", "null",
    ]
    .into_iter()
    .find(|k| s.eq_ignore_ascii_case(k))
}

struct Parser<'s> {
    src: &'s str,
    tokens: Vec<Token>,
    pos: usize,
}

type Parsed = Result<(Node, usize), EvalError>;

impl<'s> Parser<'s> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn bump(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += usize::from(t.is_some());
        t
    }

    fn err(&self, offset: usize, message: impl Into<String>) -> EvalError {
        EvalError::Parse {
            src: self.src.to_owned(),
            offset,
            message: message.into(),
        }
    }

    fn end_err(&self, expected: &str) -> EvalError {
        self.err(
            self.src.len(),
            format!("expected {expected}, found end of input"),
        )
    }

    fn describe(&self, t: &Token) -> String {
        format!("`{}`", self.src.get(t.start..t.end).unwrap_or("?"))
    }

    fn expect(&mut self, want: Tok, what: &str) -> Result<Token, EvalError> {
        match self.bump() {
            Some(t) if t.tok == want => Ok(t),
            Some(t) => Err(self.err(
                t.start,
                format!("expected {what}, found {}", self.describe(&t)),
            )),
            None => Err(self.end_err(what)),
        }
    }

    fn check_depth(&self, depth: usize, at: usize) -> Result<(), EvalError> {
        if depth > MAX_DEPTH {
            return Err(self.err(
                at,
                format!("expression nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    /// Precedence climbing: parses operators binding at least `min_bp`. Returns the node and
    /// its depth; `depth` is the nesting of the caller.
    fn expr(&mut self, min_bp: u8, depth: usize) -> Parsed {
        let (mut lhs, mut lhs_depth) = self.prefix(depth)?;
        while let Some(t) = self.peek().cloned() {
            let Some(op) = self.infix(&t) else { break };
            let (lbp, rbp) = op.binding_power();
            if lbp < min_bp {
                break;
            }
            self.pos += 1;
            let (rhs, rhs_depth) = self.expr(rbp, depth + 1)?;
            let node_depth = lhs_depth.max(rhs_depth) + 1;
            self.check_depth(node_depth, t.start)?;
            lhs = self.combine(op, lhs, rhs)?;
            lhs_depth = node_depth;
        }
        Ok((lhs, lhs_depth))
    }

    fn infix(&self, t: &Token) -> Option<Infix> {
        let op = match &t.tok {
            Tok::OrOr => Infix::Or,
            Tok::AndAnd => Infix::And,
            Tok::EqEq => Infix::Cmp(CmpOp::Eq),
            Tok::Ne => Infix::Cmp(CmpOp::Ne),
            Tok::Gt => Infix::Cmp(CmpOp::Gt),
            Tok::Ge => Infix::Cmp(CmpOp::Ge),
            Tok::Lt => Infix::Cmp(CmpOp::Lt),
            Tok::Le => Infix::Cmp(CmpOp::Le),
            Tok::Plus => Infix::Arith(Arith::Add),
            Tok::Minus => Infix::Arith(Arith::Sub),
            Tok::Star => Infix::Arith(Arith::Mul),
            Tok::Slash => Infix::Arith(Arith::Div),
            Tok::Percent => Infix::Arith(Arith::Rem),
            Tok::Ident(word) => match keyword(word)? {
                "or" => Infix::Or,
                "and" => Infix::And,
                "contains" => Infix::Cmp(CmpOp::Contains),
                "in" => Infix::In,
                "matches" => Infix::Matches,
                _ => return None,
            },
            _ => return None,
        };
        Some(op)
    }

    fn combine(&self, op: Infix, lhs: Node, rhs: Node) -> Result<Node, EvalError> {
        let (a, b) = (Box::new(lhs), Box::new(rhs));
        Ok(match op {
            Infix::Or => Node::Or(a, b),
            Infix::And => Node::And(a, b),
            Infix::Cmp(c) => Node::Cmp(c, a, b),
            Infix::In => Node::In(a, b),
            Infix::Arith(x) => Node::Arith(x, a, b),
            Infix::Matches => {
                let compiled = match b.as_ref() {
                    Node::Lit(Value::String(p)) => Some(Pattern::compile(p)?),
                    _ => None,
                };
                Node::Matches(a, b, compiled)
            }
        })
    }

    fn prefix(&mut self, depth: usize) -> Parsed {
        let Some(t) = self.bump() else {
            return Err(self.end_err("a value"));
        };
        self.check_depth(depth + 1, t.start)?;
        let unary = |this: &mut Self, bp, wrap: fn(Box<Node>) -> Node| -> Parsed {
            let (n, d) = this.expr(bp, depth + 1)?;
            Ok((wrap(Box::new(n)), d + 1))
        };
        match &t.tok {
            Tok::Num(n) => Ok((Node::Lit(Value::Number(n.clone())), 1)),
            Tok::Str(s) => Ok((Node::Lit(Value::String(s.clone())), 1)),
            Tok::Bang => unary(self, UNARY_BP, Node::Not),
            Tok::Minus => {
                let (n, d) = unary(self, UNARY_BP, Node::Neg)?;
                Ok((fold_negative_literal(n), d))
            }
            Tok::LParen => {
                let inner = self.expr(0, depth + 1)?;
                self.expect(Tok::RParen, "`)`")?;
                Ok(inner)
            }
            Tok::DollarBrace => {
                let inner = self.expr(0, depth + 1)?;
                self.expect(Tok::RBrace, "`}` closing `${`")?;
                Ok(inner)
            }
            Tok::LBracket => self.list(depth),
            Tok::Ident(word) => match keyword(word) {
                Some("true") => Ok((Node::Lit(Value::Bool(true)), 1)),
                Some("false") => Ok((Node::Lit(Value::Bool(false)), 1)),
                Some("null") => Ok((Node::Lit(Value::Null), 1)),
                Some("not") => unary(self, NOT_WORD_BP, Node::Not),
                Some(k) => Err(self.err(t.start, format!("expected a value, found `{k}`"))),
                None => self.path(&t, word.clone()),
            },
            _ => Err(self.err(
                t.start,
                format!("expected a value, found {}", self.describe(&t)),
            )),
        }
    }

    fn list(&mut self, depth: usize) -> Parsed {
        let mut items = Vec::new();
        let mut max_depth = 0;
        loop {
            if self.peek().is_some_and(|t| t.tok == Tok::RBracket) {
                self.pos += 1;
                return Ok((Node::List(items), max_depth + 1));
            }
            let (item, d) = self.expr(0, depth + 1)?;
            items.push(item);
            max_depth = max_depth.max(d);
            match self.bump() {
                Some(t) if t.tok == Tok::Comma => {}
                Some(t) if t.tok == Tok::RBracket => return Ok((Node::List(items), max_depth + 1)),
                Some(t) => {
                    let found = self.describe(&t);
                    return Err(self.err(t.start, format!("expected `,` or `]`, found {found}")));
                }
                None => return Err(self.end_err("`,` or `]`")),
            }
        }
    }

    /// `root(.field | ."quoted" | .* | .N | [N] | ["key"] | [*])*`
    fn path(&mut self, root_tok: &Token, root: String) -> Parsed {
        let mut segments = Vec::new();
        let mut end = root_tok.end;
        while let Some(t) = self.peek().cloned() {
            let seg = match t.tok {
                Tok::Dot => {
                    self.pos += 1;
                    self.segment_after_dot()?
                }
                Tok::LBracket => {
                    self.pos += 1;
                    let seg = self.segment_in_brackets()?;
                    self.expect(Tok::RBracket, "`]`")?;
                    seg
                }
                _ => break,
            };
            segments.push(seg);
            end = self
                .tokens
                .get(self.pos.saturating_sub(1))
                .map_or(end, |t| t.end);
        }
        let text = self
            .src
            .get(root_tok.start..end)
            .unwrap_or(&root)
            .to_owned();
        Ok((
            Node::Path(PathExpr {
                text,
                root,
                segments,
            }),
            1,
        ))
    }

    fn segment_after_dot(&mut self) -> Result<Segment, EvalError> {
        match self.bump() {
            Some(Token {
                tok: Tok::Ident(s) | Tok::Str(s),
                ..
            }) => Ok(Segment::Field(s)),
            Some(Token { tok: Tok::Star, .. }) => Ok(Segment::Wildcard),
            Some(
                t @ Token {
                    tok: Tok::Num(_), ..
                },
            ) => self.index(&t),
            Some(t) => {
                let found = self.describe(&t);
                Err(self.err(
                    t.start,
                    format!("expected a field name after `.`, found {found}"),
                ))
            }
            None => Err(self.end_err("a field name after `.`")),
        }
    }

    fn segment_in_brackets(&mut self) -> Result<Segment, EvalError> {
        match self.bump() {
            Some(Token {
                tok: Tok::Str(s), ..
            }) => Ok(Segment::Field(s)),
            Some(Token { tok: Tok::Star, .. }) => Ok(Segment::Wildcard),
            Some(
                t @ Token {
                    tok: Tok::Num(_), ..
                },
            ) => self.index(&t),
            Some(t) => {
                let found = self.describe(&t);
                Err(self.err(
                    t.start,
                    format!("expected an index, a quoted key or `*`, found {found}"),
                ))
            }
            None => Err(self.end_err("an index")),
        }
    }

    fn index(&self, t: &Token) -> Result<Segment, EvalError> {
        match &t.tok {
            Tok::Num(n) => n
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .map(Segment::Index)
                .ok_or_else(|| self.err(t.start, "an index must be a non-negative integer")),
            _ => Err(self.err(t.start, "expected an index")),
        }
    }
}

/// `-3` is the literal -3, so references and constant conditions see a plain number.
fn fold_negative_literal(node: Node) -> Node {
    if let Node::Neg(inner) = &node
        && let Node::Lit(v @ Value::Number(_)) = inner.as_ref()
        && let Ok(negated) = crate::value::negate(v)
    {
        return Node::Lit(negated);
    }
    node
}

#[cfg(test)]
#[path = "expr_tests.rs"]
mod tests;
