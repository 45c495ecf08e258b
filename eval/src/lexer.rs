//! Tokens of the expression language, produced one at a time so a template can stop at the
//! `}` that closes a `${`.
//!
//! Identifiers are `[A-Za-z_][A-Za-z0-9_-]*` without a trailing `-`: stage ids such as
//! `quality-checks` are one identifier, so subtraction needs spaces (`a - b`).

use serde_json::Number;

/// A token kind.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Num(Number),
    Str(String),
    Ident(String),
    Dot,
    Star,
    Comma,
    LBracket,
    RBracket,
    LParen,
    RParen,
    /// `${`
    DollarBrace,
    RBrace,
    Plus,
    Minus,
    Slash,
    Percent,
    EqEq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    AndAnd,
    OrOr,
    Bang,
}

/// A token and the byte range it covers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// A lexing problem at a byte offset.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LexError {
    pub(crate) offset: usize,
    pub(crate) message: String,
}

/// Lexes `src` starting at byte `pos`.
pub(crate) struct Lexer<'s> {
    src: &'s str,
    pos: usize,
    /// The previous token was `.`: digits then form an index, not a float (`a.0.x`).
    after_dot: bool,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl<'s> Lexer<'s> {
    pub(crate) fn new(src: &'s str, pos: usize) -> Self {
        Lexer {
            src,
            pos,
            after_dot: false,
        }
    }

    fn peek_char(&self, ahead: usize) -> Option<char> {
        self.src.get(self.pos..)?.chars().nth(ahead)
    }

    fn err(&self, offset: usize, message: impl Into<String>) -> LexError {
        LexError {
            offset,
            message: message.into(),
        }
    }

    /// The next token, `Ok(None)` at the end of input.
    pub(crate) fn next_token(&mut self) -> Result<Option<Token>, LexError> {
        while let Some(c) = self.peek_char(0) {
            if !c.is_whitespace() {
                break;
            }
            self.pos += c.len_utf8();
        }
        let start = self.pos;
        let Some(c) = self.peek_char(0) else {
            return Ok(None);
        };
        let after_dot = std::mem::replace(&mut self.after_dot, false);
        let tok = match c {
            '0'..='9' => self.number(after_dot)?,
            '"' | '\'' => Tok::Str(self.string(c)?),
            c if is_ident_start(c) => Tok::Ident(self.ident()),
            _ => self.punct(c)?,
        };
        self.after_dot = tok == Tok::Dot;
        Ok(Some(Token {
            tok,
            start,
            end: self.pos,
        }))
    }

    fn punct(&mut self, c: char) -> Result<Tok, LexError> {
        let next = self.peek_char(1);
        let (tok, len) = match (c, next) {
            ('$', Some('{')) => (Tok::DollarBrace, 2),
            ('=', Some('=')) => (Tok::EqEq, 2),
            ('!', Some('=')) => (Tok::Ne, 2),
            ('>', Some('=')) => (Tok::Ge, 2),
            ('<', Some('=')) => (Tok::Le, 2),
            ('&', Some('&')) => (Tok::AndAnd, 2),
            ('|', Some('|')) => (Tok::OrOr, 2),
            ('.', _) => (Tok::Dot, 1),
            ('*', _) => (Tok::Star, 1),
            (',', _) => (Tok::Comma, 1),
            ('[', _) => (Tok::LBracket, 1),
            (']', _) => (Tok::RBracket, 1),
            ('(', _) => (Tok::LParen, 1),
            (')', _) => (Tok::RParen, 1),
            ('}', _) => (Tok::RBrace, 1),
            ('+', _) => (Tok::Plus, 1),
            ('-', _) => (Tok::Minus, 1),
            ('/', _) => (Tok::Slash, 1),
            ('%', _) => (Tok::Percent, 1),
            ('>', _) => (Tok::Gt, 1),
            ('<', _) => (Tok::Lt, 1),
            ('!', _) => (Tok::Bang, 1),
            ('=', _) => return Err(self.err(self.pos, "`=` is not an operator; use `==`")),
            ('&', _) => return Err(self.err(self.pos, "`&` is not an operator; use `&&` or AND")),
            ('|', _) => return Err(self.err(self.pos, "`|` is not an operator; use `||` or OR")),
            ('$', _) => {
                return Err(self.err(self.pos, "`$` must start `${`; a `$.` path stands alone"));
            }
            _ => return Err(self.err(self.pos, format!("unexpected character `{c}`"))),
        };
        self.pos += len;
        Ok(tok)
    }

    fn ident(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek_char(0) {
            let continues =
                is_ident_char(c) || (c == '-' && self.peek_char(1).is_some_and(is_ident_char));
            if !continues {
                break;
            }
            self.pos += 1;
        }
        self.src[start..self.pos].to_owned()
    }

    fn digits(&mut self) {
        while self.peek_char(0).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
    }

    fn number(&mut self, index_only: bool) -> Result<Tok, LexError> {
        let start = self.pos;
        self.digits();
        let mut is_float = false;
        if !index_only {
            if self.peek_char(0) == Some('.')
                && self.peek_char(1).is_some_and(|c| c.is_ascii_digit())
            {
                is_float = true;
                self.pos += 1;
                self.digits();
            }
            if matches!(self.peek_char(0), Some('e' | 'E')) {
                let sign = usize::from(matches!(self.peek_char(1), Some('+' | '-')));
                if self.peek_char(1 + sign).is_some_and(|c| c.is_ascii_digit()) {
                    is_float = true;
                    self.pos += 1 + sign;
                    self.digits();
                }
            }
        }
        let text = &self.src[start..self.pos];
        let number = if is_float {
            None
        } else {
            text.parse::<u64>().ok().map(Number::from)
        };
        let number = number.or_else(|| text.parse::<f64>().ok().and_then(Number::from_f64));
        number
            .map(Tok::Num)
            .ok_or_else(|| self.err(start, format!("number `{text}` is out of range")))
    }

    /// A quoted string; `\` escapes `\n \t \r \\ \' \" \u{..}`-style `\uXXXX` and `$`.
    fn string(&mut self, quote: char) -> Result<String, LexError> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek_char(0) else {
                return Err(self.err(start, format!("unterminated string starting with {quote}")));
            };
            self.pos += c.len_utf8();
            match c {
                c if c == quote => return Ok(out),
                '\\' => out.push(self.escape()?),
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self) -> Result<char, LexError> {
        let at = self.pos - 1;
        let Some(c) = self.peek_char(0) else {
            return Err(self.err(at, "unfinished escape at end of input"));
        };
        self.pos += c.len_utf8();
        Ok(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            '0' => '\0',
            '\\' | '\'' | '"' | '$' | '/' => c,
            'u' => {
                let hex = self.src.get(self.pos..self.pos + 4).unwrap_or("");
                let code = u32::from_str_radix(hex, 16).ok().filter(|_| hex.len() == 4);
                let ch = code.and_then(char::from_u32);
                let Some(ch) = ch else {
                    return Err(self.err(at, "`\\u` needs four hex digits of a unicode scalar"));
                };
                self.pos += 4;
                ch
            }
            other => return Err(self.err(at, format!("unknown escape `\\{other}`"))),
        })
    }
}

/// Lexes the whole of `src`.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, LexError> {
    let mut lexer = Lexer::new(src, 0);
    let mut out = Vec::new();
    while let Some(t) = lexer.next_token()? {
        out.push(t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok> {
        tokenize(src)
            .expect("lexes")
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    #[test]
    fn token_table() {
        use Tok::*;
        let id = |s: &str| Ident(s.to_owned());
        let cases: Vec<(&str, Vec<Tok>)> = vec![
            ("quality-checks.x", vec![id("quality-checks"), Dot, id("x")]),
            ("a - b", vec![id("a"), Minus, id("b")]),
            ("a- b", vec![id("a"), Minus, id("b")]),
            (
                "a.0.1",
                vec![id("a"), Dot, Num(0.into()), Dot, Num(1.into())],
            ),
            (
                "1.5e3",
                vec![Num(Number::from_f64(1500.0).expect("finite"))],
            ),
            (
                "'it\\'s' \"q\\\"\"",
                vec![Str("it's".into()), Str("q\"".into())],
            ),
            (
                "${a}>=3",
                vec![DollarBrace, id("a"), RBrace, Ge, Num(3.into())],
            ),
            (
                "!a && b || c",
                vec![Bang, id("a"), AndAnd, id("b"), OrOr, id("c")],
            ),
            ("'\\u00e9'", vec![Str("é".into())]),
        ];
        for (src, want) in cases {
            assert_eq!(kinds(src), want, "{src}");
        }
    }

    #[test]
    fn lex_errors() {
        for (src, offset) in [
            ("a = b", 2),
            ("'open", 0),
            ("a @ b", 2),
            ("'\\q'", 1),
            ("1e999", 0),
        ] {
            assert_eq!(tokenize(src).map_err(|e| e.offset), Err(offset), "{src}");
        }
    }
}
