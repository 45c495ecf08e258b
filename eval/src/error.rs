//! The one error type of the crate: [`EvalError`].
//!
//! Every message is a lowercase sentence naming the reference, field or source text it is
//! about, so callers can prefix it with a stage id and a file location and show it as is.

/// Everything that can go wrong while parsing or evaluating templates and conditions.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// The source text of a template, expression or jq filter does not parse.
    #[error("cannot parse `{src}` at byte {offset}: {message}")]
    Parse {
        /// The whole text that was being parsed.
        src: String,
        /// Byte offset of the problem in `src`.
        offset: usize,
        /// What is wrong there.
        message: String,
    },
    /// A reference that does not resolve in the context. Never silently null.
    #[error("undefined reference `{reference}`: {detail}")]
    Undefined {
        /// The reference as written, `${...}` or `$.` path included.
        reference: String,
        /// Why it does not resolve, e.g. "no stage output `analyze` yet".
        detail: String,
    },
    /// An operator applied to values of the wrong types.
    #[error("{message}")]
    Type {
        /// Names the operator and both types.
        message: String,
    },
    /// Arithmetic that has no result (division by zero, overflow to infinity).
    #[error("{message}")]
    Arithmetic {
        /// What went wrong.
        message: String,
    },
    /// A regular expression that does not compile.
    #[error("invalid regex `{pattern}`: {message}")]
    Regex {
        /// The pattern as written.
        pattern: String,
        /// The regex compiler's complaint.
        message: String,
    },
    /// A jq filter (custom condition) that fails to compile or to run.
    #[error("jq filter `{filter}`: {message}")]
    Jq {
        /// The filter (or the whole script when it cannot be unwrapped).
        filter: String,
        /// What went wrong.
        message: String,
    },
    /// A field a structured condition does not know.
    #[error("unknown field `{field}`{}", did_you_mean(.suggestion))]
    UnknownField {
        /// The field as written.
        field: String,
        /// The closest known field, if one is close.
        suggestion: Option<String>,
    },
    /// A field a structured condition needs.
    #[error("missing field `{field}`")]
    MissingField {
        /// The field's name.
        field: String,
    },
    /// A field whose value is wrong; `source` says how.
    #[error("field `{field}`: {source}")]
    Field {
        /// The field's name (or `[i]` for an element of a condition list).
        field: String,
        /// The problem with its value.
        source: Box<EvalError>,
    },
    /// A value of the wrong kind where a specific kind is required.
    #[error("{what}: {message}")]
    Invalid {
        /// What was being read, e.g. "condition type `thresold`".
        what: String,
        /// What was expected instead.
        message: String,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

impl EvalError {
    /// Wraps `self` as the problem with field `field`.
    pub(crate) fn in_field(self, field: impl Into<String>) -> Self {
        EvalError::Field {
            field: field.into(),
            source: Box::new(self),
        }
    }

    pub(crate) fn type_error(message: impl Into<String>) -> Self {
        EvalError::Type {
            message: message.into(),
        }
    }

    /// Shifts the offset of a parse error by `by` bytes and replaces its source text, used
    /// when an inner piece was parsed on its own.
    pub(crate) fn relocate(self, by: usize, whole: &str) -> Self {
        match self {
            EvalError::Parse {
                offset, message, ..
            } => EvalError::Parse {
                src: whole.to_owned(),
                offset: offset + by,
                message,
            },
            other => other,
        }
    }

    /// True for an undefined reference (exists conditions turn it into `false`).
    pub fn is_undefined(&self) -> bool {
        matches!(self, EvalError::Undefined { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_and_name_the_thing() {
        let cases = [
            (
                EvalError::Undefined {
                    reference: "${analyze.quality_score}".into(),
                    detail: "no stage output `analyze` yet".into(),
                },
                "undefined reference `${analyze.quality_score}`: no stage output `analyze` yet",
            ),
            (
                EvalError::UnknownField {
                    field: "opertor".into(),
                    suggestion: Some("operator".into()),
                },
                "unknown field `opertor`; did you mean `operator`?",
            ),
            (
                EvalError::UnknownField {
                    field: "zzz".into(),
                    suggestion: None,
                },
                "unknown field `zzz`",
            ),
            (
                EvalError::MissingField {
                    field: "left".into(),
                }
                .in_field("conditions"),
                "field `conditions`: missing field `left`",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }
}
