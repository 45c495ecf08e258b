//! Diagnostics: every problem found in a cascade, with where it was written.
//!
//! Validation collects all of them before giving up, so a user fixes a file
//! in one pass instead of one error per run.

use std::fmt;

use super::yaml::Loc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    #[serde(serialize_with = "ser_loc")]
    pub loc: Option<Loc>,
    /// The field path, e.g. `stages[2].dependencies[0]`.
    pub field: String,
    pub message: String,
}

fn ser_loc<S: serde::Serializer>(loc: &Option<Loc>, s: S) -> Result<S::Ok, S::Error> {
    match loc {
        Some(l) => s.serialize_str(&l.to_string()),
        None => s.serialize_none(),
    }
}

impl Diagnostic {
    pub fn error(loc: Option<Loc>, field: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            loc,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn warning(loc: Option<Loc>, field: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            loc,
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The message with a copy of the offending source line and a caret
    /// under the column, when the source text is at hand.
    pub fn render(&self, source: Option<&str>) -> String {
        let mut out = self.to_string();
        if let (Some(loc), Some(src)) = (&self.loc, source)
            && let Some(line) = src.lines().nth(loc.line.saturating_sub(1) as usize)
        {
            let line: String = line.chars().take(200).collect();
            let num = loc.line.to_string();
            let pad = " ".repeat(num.len());
            let caret = " ".repeat(loc.col.saturating_sub(1).min(200) as usize);
            out.push_str(&format!("\n {pad} |\n {num} | {line}\n {pad} | {caret}^"));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match &self.loc {
            Some(loc) => write!(f, "{sev}: {loc}: ")?,
            None => write!(f, "{sev}: ")?,
        }
        if !self.field.is_empty() {
            write!(f, "`{}`: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}
