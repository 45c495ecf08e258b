//! A YAML (and JSON) document as a tree of nodes that remember where they
//! were written.
//!
//! serde stops at the first error; validation has to report every problem
//! with its line and column, so the normaliser walks this tree instead. The
//! tree is built from granit-parser's event stream (serde-saphyr's own parser) with hard limits, so a
//! hostile file is refused before it costs memory or stack:
//! - the file size is checked before parsing ([`MAX_FILE_BYTES`]);
//! - nesting deeper than [`MAX_DEPTH`] is refused (the builder is iterative,
//!   so depth never touches the call stack);
//! - every alias counts the size of what it expands to against
//!   [`MAX_NODES`], so a "billion laughs" document fails fast.
//!
//! JSON is a subset of YAML 1.2: the same parser reads `.json` files.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span};

/// Larger cascade files are refused before parsing.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Deepest nesting of sequences and mappings accepted.
pub const MAX_DEPTH: usize = 64;
/// Most nodes a document may expand to, aliases included.
pub const MAX_NODES: usize = 200_000;

/// A position in a source file (1-based line and column).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<str>,
    pub line: u32,
    pub col: u32,
}

impl Loc {
    pub fn new(file: &Arc<str>, line: usize, col: usize) -> Self {
        Loc {
            file: file.clone(),
            line: line as u32,
            col: col as u32,
        }
    }
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub loc: Loc,
}

#[derive(Clone, Debug)]
pub enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a number",
            Kind::Str(_) => "a string",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            Kind::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The value of key `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// A scalar rendered as text (for keys and string-ish fields).
    pub fn scalar_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Int(i) => Some(i.to_string()),
            Kind::Float(f) => Some(f.to_string()),
            Kind::Bool(b) => Some(b.to_string()),
            Kind::Null => None,
            Kind::Seq(_) | Kind::Map(_) => None,
        }
    }

    pub fn to_json(&self) -> Value {
        match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            Kind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.scalar_text().unwrap_or_else(|| "null".into()),
                            v.to_json(),
                        )
                    })
                    .collect(),
            ),
        }
    }

    fn size(&self) -> usize {
        match &self.kind {
            Kind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Kind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
            _ => 1,
        }
    }
}

/// Why a document could not be read at all.
#[derive(Clone, Debug, PartialEq)]
pub struct ParseFailure {
    pub loc: Loc,
    pub message: String,
}

enum Frame {
    Seq {
        loc: Loc,
        items: Vec<Node>,
        anchor: usize,
    },
    Map {
        loc: Loc,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        anchor: usize,
    },
}

/// Parses the first document of `text`. Duplicate keys are reported as
/// failures too: a later key silently winning hides mistakes.
pub fn parse(file: &Arc<str>, text: &str) -> Result<Option<Node>, Vec<ParseFailure>> {
    let mut builder = Builder {
        file: file.clone(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        nodes: 0,
        failures: Vec::new(),
        root: None,
    };
    for event in Parser::new_from_str(text) {
        match event {
            Ok((event, span)) => {
                if let Err(f) = builder.event(event, span) {
                    builder.failures.push(f);
                    break;
                }
                if builder.root.is_some() {
                    break;
                }
            }
            Err(e) => {
                let m = e.marker();
                // The scanner looks ahead through flow collections and hits
                // its own depth limit before the builder sees the events.
                let message = if e.info().contains("recursion limit") {
                    format!("nesting deeper than {MAX_DEPTH} levels; refusing the document")
                } else {
                    format!("malformed YAML: {}", e.info())
                };
                builder.failures.push(ParseFailure {
                    loc: Loc::new(file, m.line(), m.col() + 1),
                    message,
                });
                break;
            }
        }
    }
    if builder.failures.is_empty() {
        Ok(builder.root)
    } else {
        Err(builder.failures)
    }
}

struct Builder {
    file: Arc<str>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    failures: Vec<ParseFailure>,
    root: Option<Node>,
}

impl Builder {
    fn loc(&self, span: &Span) -> Loc {
        Loc::new(&self.file, span.start.line(), span.start.col() + 1)
    }

    fn fail(&self, loc: Loc, message: impl Into<String>) -> ParseFailure {
        ParseFailure {
            loc,
            message: message.into(),
        }
    }

    fn count(&mut self, n: usize, loc: &Loc) -> Result<(), ParseFailure> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(self.fail(
                loc.clone(),
                format!(
                    "document expands to more than {MAX_NODES} nodes (aliases included); \
                     refusing it as a likely YAML bomb"
                ),
            ));
        }
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), ParseFailure> {
        let loc = self.loc(&span);
        match event {
            Event::Scalar(value, style, anchor, tag) => {
                self.count(1, &loc)?;
                let forced_str = tag.as_ref().is_some_and(|t| t.suffix() == "str");
                let kind = if style == ScalarStyle::Plain && !forced_str {
                    resolve_plain(&value)
                } else {
                    Kind::Str(value.into_owned())
                };
                self.push(Node { kind, loc }, anchor)
            }
            Event::SequenceStart(_, anchor, _) => {
                self.count(1, &loc)?;
                self.open(Frame::Seq {
                    loc,
                    items: Vec::new(),
                    anchor,
                })
            }
            Event::MappingStart(_, anchor, _) => {
                self.count(1, &loc)?;
                self.open(Frame::Map {
                    loc,
                    entries: Vec::new(),
                    pending_key: None,
                    anchor,
                })
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match self.stack.pop() {
                    Some(Frame::Seq { loc, items, anchor }) => (
                        Node {
                            kind: Kind::Seq(items),
                            loc,
                        },
                        anchor,
                    ),
                    Some(Frame::Map {
                        loc,
                        entries,
                        anchor,
                        ..
                    }) => (
                        Node {
                            kind: Kind::Map(entries),
                            loc,
                        },
                        anchor,
                    ),
                    None => return Err(self.fail(loc, "malformed YAML: unbalanced collection end")),
                };
                self.push(node, anchor)
            }
            Event::Alias(id) => {
                let Some(target) = self.anchors.get(&id) else {
                    return Err(self.fail(loc, "malformed YAML: alias to an unknown anchor"));
                };
                let size = target.size();
                let mut node = target.clone();
                self.count(size, &loc)?;
                node.loc = loc;
                self.push(node, 0)
            }
            // Anchor names and unresolved aliases are only emitted when
            // asked for (`Options`); the default parser resolves aliases.
            Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart(..)
            | Event::DocumentEnd
            | Event::Anchor(..) => Ok(()),
            Event::UnresolvedAlias(_) => {
                Err(self.fail(loc, "malformed YAML: alias to an unknown anchor"))
            }
            // Presentation only (comments, when serde-saphyr enables them).
            _ => Ok(()),
        }
    }

    fn open(&mut self, frame: Frame) -> Result<(), ParseFailure> {
        if self.stack.len() >= MAX_DEPTH {
            let loc = match &frame {
                Frame::Seq { loc, .. } | Frame::Map { loc, .. } => loc.clone(),
            };
            return Err(self.fail(
                loc,
                format!("nesting deeper than {MAX_DEPTH} levels; refusing the document"),
            ));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn push(&mut self, node: Node, anchor: usize) -> Result<(), ParseFailure> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(node);
                Ok(())
            }
            Some(Frame::Seq { items, .. }) => {
                items.push(node);
                Ok(())
            }
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => {
                    if matches!(node.kind, Kind::Seq(_) | Kind::Map(_)) {
                        return Err(ParseFailure {
                            loc: node.loc,
                            message: "a mapping key must be a plain value, not a list or mapping"
                                .into(),
                        });
                    }
                    if let Some((first, _)) = entries
                        .iter()
                        .find(|(k, _)| k.scalar_text() == node.scalar_text())
                    {
                        let key = node.scalar_text().unwrap_or_else(|| "null".into());
                        return Err(ParseFailure {
                            loc: node.loc.clone(),
                            message: format!(
                                "duplicate key `{key}` (first defined at line {})",
                                first.loc.line
                            ),
                        });
                    }
                    *pending_key = Some(node);
                    Ok(())
                }
                Some(key) => {
                    entries.push((key, node));
                    Ok(())
                }
            },
        }
    }
}

/// YAML 1.2 core schema resolution of a plain scalar.
fn resolve_plain(s: &str) -> Kind {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" => return Kind::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Kind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Kind::Float(f64::NAN),
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && let Ok(i) = s.parse::<i64>()
    {
        return Kind::Int(i);
    }
    if let Some(hex) = s.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Kind::Int(i);
    }
    if let Some(oct) = s.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Kind::Int(i);
    }
    let looks_numeric = s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_numeric && let Ok(f) = s.parse::<f64>() {
        return Kind::Float(f);
    }
    Kind::Str(s.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Option<Node>, Vec<ParseFailure>> {
        parse(&Arc::from("t.yaml"), text)
    }

    #[test]
    fn scalars_resolve_by_the_core_schema() {
        let n = p("a: 1\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: hello\ng: 0x10\n")
            .expect("parses")
            .expect("doc");
        let j = n.to_json();
        assert_eq!(
            j,
            serde_json::json!({"a":1,"b":1.5,"c":true,"d":null,"e":"1","f":"hello","g":16})
        );
    }

    #[test]
    fn locations_are_one_based() {
        let n = p("a:\n  b: [1, 2]\n").expect("parses").expect("doc");
        let b = n.get("a").and_then(|a| a.get("b")).expect("b");
        assert_eq!((b.loc.line, b.loc.col), (2, 6));
    }

    #[test]
    fn duplicate_keys_are_refused_with_both_lines() {
        let e = p("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(e[0].loc.line, 3);
        assert!(
            e[0].message.contains("first defined at line 1"),
            "{}",
            e[0].message
        );
    }

    #[test]
    fn json_loads_too() {
        let n = p(r#"{"a": [1, {"b": "c"}], "d": null}"#)
            .expect("parses")
            .expect("doc");
        assert_eq!(n.to_json(), serde_json::json!({"a":[1,{"b":"c"}],"d":null}));
    }

    #[test]
    fn deep_nesting_is_refused_without_recursion() {
        let text = "[".repeat(10_000) + &"]".repeat(10_000);
        let e = p(&text).expect_err("too deep");
        assert!(e[0].message.contains("nesting deeper"), "{}", e[0].message);
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for c in 'b'..='j' {
            text.push_str(&format!("{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
            prev = c;
        }
        let e = p(&text).expect_err("bomb");
        assert!(e[0].message.contains("YAML bomb"), "{}", e[0].message);
    }

    #[test]
    fn malformed_yaml_names_the_position() {
        let e = p("a: [1, 2\nb: 3\n").expect_err("malformed");
        assert!(
            e[0].message.starts_with("malformed YAML"),
            "{}",
            e[0].message
        );
        assert!(e[0].loc.line >= 1);
    }
}
