//! Finding the JSON in a model's answer.
//!
//! Models asked for JSON often wrap it: in prose ("Here is the result: {...}"), in a
//! ```` ```json ```` fence, or both. [`extract_json`] tries, in order: the whole answer, each
//! fenced block, then the balanced `{...}` / `[...]` spans from the first opening bracket
//! on (strings and escapes respected), and returns the first that parses.

use serde_json::Value;

/// How many opening brackets are tried before giving up: bounds the work on a long,
/// bracket-heavy answer that holds no JSON.
const MAX_CANDIDATES: usize = 64;

/// The JSON value in `text`, if there is one.
pub fn extract_json(text: &str) -> Option<Value> {
    let trimmed = text.trim();
    if let Ok(v) = serde_json::from_str(trimmed) {
        return Some(v);
    }
    fenced_blocks(trimmed)
        .into_iter()
        .find_map(|block| serde_json::from_str(block.trim()).ok())
        .or_else(|| balanced_spans(trimmed))
}

/// The contents of each ```` ``` ```` fence, with its info string (`json`) removed.
fn fenced_blocks(text: &str) -> Vec<&str> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("```") {
        let after = &rest[open + 3..];
        // The info string runs to the end of the line.
        let body_start = after.find('\n').map_or(after.len(), |i| i + 1);
        let body = &after[body_start..];
        let Some(close) = body.find("```") else { break };
        blocks.push(&body[..close]);
        rest = &body[close + 3..];
    }
    blocks
}

fn balanced_spans(text: &str) -> Option<Value> {
    text.char_indices()
        .filter(|(_, c)| matches!(c, '{' | '['))
        .take(MAX_CANDIDATES)
        .find_map(|(start, _)| {
            let end = balanced_end(&text[start..])?;
            serde_json::from_str(&text[start..start + end]).ok()
        })
}

/// The length of the balanced bracket span at the start of `s`.
fn balanced_end(s: &str) -> Option<usize> {
    let mut stack = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => stack.push('}'),
            '[' => stack.push(']'),
            '}' | ']' => {
                if stack.pop() != Some(c) {
                    return None;
                }
                if stack.is_empty() {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_the_json() {
        let table: &[(&str, Option<Value>)] = &[
            (r#"{"a": 1}"#, Some(json!({"a": 1}))),
            ("  [1, 2] ", Some(json!([1, 2]))),
            ("42", Some(json!(42))),
            (
                "Here it is:\n```json\n{\"a\": \"}\"}\n```\nDone.",
                Some(json!({"a": "}"})),
            ),
            ("```\n[true]\n```", Some(json!([true]))),
            (
                r#"The answer is {"score": 7, "why": "a \"quoted\" {brace"} as asked."#,
                Some(json!({"score": 7, "why": "a \"quoted\" {brace"})),
            ),
            (
                "Use {braces} like {\"x\": [1, {\"y\": 2}]} here",
                Some(json!({"x": [1, {"y": 2}]})),
            ),
            ("no json here", None),
            ("{broken", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(extract_json(text), *want, "{text}");
        }
    }
}
