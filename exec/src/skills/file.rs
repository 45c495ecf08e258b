//! One skill file: read it (bounded), parse it with serde-saphyr under a tight budget, and
//! turn it into a [`SkillDef`], reporting every problem with `path:line:col`.
//!
//! Defences against hostile files: files over [`MAX_SKILL_FILE_BYTES`] are refused before
//! parsing, and the parser runs with a small [`Budget`] (depth, events, nodes, aliases,
//! scalar bytes) and alias-replay limits, so a deeply nested file or an alias bomb fails
//! fast instead of eating memory.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use cascade_core::duration::parse_nonzero_duration as parse_duration;
use cascade_core::files::sanitize;
use cascade_core::suggest::did_you_mean;
use cascade_proto::SkillName;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, MessageFormatter, Options, Spanned};

fn parse_options() -> Options {
    cascade_core::files::small_file_options(MAX_SKILL_FILE_BYTES)
}

use super::{FilePos, ModelOutput, ModelSkill, SkillDef, SkillKind, SkillLoadError};

/// Skill files larger than this are refused without being parsed.
pub const MAX_SKILL_FILE_BYTES: u64 = 1024 * 1024;

/// The schema of a skill file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSkill {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    run: Option<Spanned<String>>,
    #[serde(default)]
    command: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    prompt: Option<Spanned<String>>,
    #[serde(default)]
    system: Option<Spanned<String>>,
    #[serde(default)]
    output: Option<Spanned<String>>,
    #[serde(default)]
    model: Option<Spanned<String>>,
    #[serde(default)]
    max_tokens: Option<Spanned<u64>>,
    #[serde(default)]
    temperature: Option<Spanned<f64>>,
    #[serde(default)]
    timeout: Option<Spanned<SkillTimeout>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    inputs: Option<Names>,
    #[serde(default)]
    outputs: Option<Vec<String>>,
}

/// The top-level field names, for did-you-mean suggestions and field attribution.
const FIELDS: &[&str] = &[
    "name",
    "description",
    "run",
    "command",
    "prompt",
    "system",
    "output",
    "model",
    "max_tokens",
    "temperature",
    "timeout",
    "env",
    "inputs",
    "outputs",
];

/// Reads, parses and validates one skill file.
pub(super) fn load_file(path: &Path) -> Result<SkillDef, Vec<SkillLoadError>> {
    let text = read_bounded(path).map_err(|e| vec![e])?;
    parse(path, &text)
}

/// Parses and validates one skill file's text, as [`load_file`] does after reading it;
/// `path` names it in messages and gives the default name (its stem).
pub(super) fn parse(path: &Path, text: &str) -> Result<SkillDef, Vec<SkillLoadError>> {
    if text.len() as u64 > MAX_SKILL_FILE_BYTES {
        return Err(vec![SkillLoadError::TooLarge {
            path: path.to_owned(),
            size: text.len() as u64,
            limit: MAX_SKILL_FILE_BYTES,
        }]);
    }
    let raw: RawSkill = serde_saphyr::from_str_with_options(text, parse_options())
        .map_err(|e| vec![parse_error(path, text, &e)])?;
    into_def(path, raw)
}

fn read_bounded(path: &Path) -> Result<String, SkillLoadError> {
    let read_err = |source| SkillLoadError::Read {
        path: path.to_owned(),
        source,
    };
    let too_large = |size| SkillLoadError::TooLarge {
        path: path.to_owned(),
        size,
        limit: MAX_SKILL_FILE_BYTES,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size > MAX_SKILL_FILE_BYTES {
        return Err(too_large(size));
    }
    // The file may grow between `metadata` and `read`: never read past the limit.
    let mut bytes = Vec::new();
    file.take(MAX_SKILL_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_SKILL_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|_| SkillLoadError::Invalid {
        at: whole_file(path),
        message: "skill file is not valid UTF-8".to_owned(),
    })
}

fn into_def(path: &Path, raw: RawSkill) -> Result<SkillDef, Vec<SkillLoadError>> {
    let mut errors = Vec::new();
    let mut invalid = |loc: Option<&Location>, message: String| {
        let at = loc.map_or_else(|| whole_file(path), |l| at(path, l));
        errors.push(SkillLoadError::Invalid { at, message });
    };
    let name = match &raw.name {
        Some(n) => n.value.clone(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let name_loc = raw.name.as_ref().map(|n| &n.referenced);
    if name.trim().is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        invalid(
            name_loc,
            format!("field `name`: invalid skill name {name:?}"),
        );
    }
    let model_fields = ModelFields {
        system: raw.system,
        output: raw.output,
        model: raw.model,
        max_tokens: raw.max_tokens,
        temperature: raw.temperature,
    };
    let is_model = raw.prompt.is_some() && raw.run.is_none() && raw.command.is_none();
    if !is_model {
        model_fields.refuse_without_prompt(&mut invalid);
    }
    let kind = match (raw.run, raw.command, raw.prompt) {
        (Some(run), None, None) => {
            if run.value.trim().is_empty() {
                invalid(
                    Some(&run.referenced),
                    "field `run`: must not be empty".to_owned(),
                );
            }
            SkillKind::Shell { run: run.value }
        }
        (None, Some(cmd), None) => {
            if cmd.value.first().is_none_or(|p| p.is_empty()) {
                invalid(
                    Some(&cmd.referenced),
                    "field `command`: must name a program".to_owned(),
                );
            }
            SkillKind::Command { argv: cmd.value }
        }
        (None, None, Some(prompt)) => model_kind(prompt, model_fields, &mut invalid),
        (None, None, None) => {
            invalid(
                None,
                "missing field `run`, `command` or `prompt`: give exactly one".to_owned(),
            );
            SkillKind::Command { argv: Vec::new() }
        }
        (run, command, prompt) => {
            let given: Vec<(&str, &Location)> = [
                run.as_ref().map(|r| ("run", &r.referenced)),
                command.as_ref().map(|c| ("command", &c.referenced)),
                prompt.as_ref().map(|p| ("prompt", &p.referenced)),
            ]
            .into_iter()
            .flatten()
            .collect();
            let names: Vec<String> = given.iter().map(|(n, _)| format!("`{n}`")).collect();
            let listed = match names.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
                None => String::new(),
            };
            invalid(
                given.last().map(|(_, l)| *l),
                format!("fields {listed} are exclusive: give only one"),
            );
            SkillKind::Command { argv: Vec::new() }
        }
    };
    for key in raw.env.keys() {
        if key.is_empty() || key.contains(['=', '\0']) {
            invalid(None, format!("field `env`: invalid variable name {key:?}"));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(SkillDef {
        name: SkillName::new(name),
        description: raw.description,
        kind,
        timeout: raw.timeout.map(|t| t.value.0),
        env: raw.env,
        inputs: raw.inputs.map(|n| n.0).unwrap_or_default(),
        outputs: raw.outputs.unwrap_or_default(),
        source: Some(std::path::absolute(path).unwrap_or_else(|_| path.to_owned())),
    })
}

/// The fields only a model skill (`prompt`) may have.
struct ModelFields {
    system: Option<Spanned<String>>,
    output: Option<Spanned<String>>,
    model: Option<Spanned<String>>,
    max_tokens: Option<Spanned<u64>>,
    temperature: Option<Spanned<f64>>,
}

impl ModelFields {
    fn refuse_without_prompt(&self, invalid: &mut impl FnMut(Option<&Location>, String)) {
        let given = [
            ("system", self.system.as_ref().map(|f| &f.referenced)),
            ("output", self.output.as_ref().map(|f| &f.referenced)),
            ("model", self.model.as_ref().map(|f| &f.referenced)),
            (
                "max_tokens",
                self.max_tokens.as_ref().map(|f| &f.referenced),
            ),
            (
                "temperature",
                self.temperature.as_ref().map(|f| &f.referenced),
            ),
        ];
        for (name, loc) in given {
            if let Some(loc) = loc {
                invalid(
                    Some(loc),
                    format!("field `{name}`: only for model skills (with `prompt`)"),
                );
            }
        }
    }
}

/// A model skill: its templates must parse, its settings be in range.
fn model_kind(
    prompt: Spanned<String>,
    f: ModelFields,
    invalid: &mut impl FnMut(Option<&Location>, String),
) -> SkillKind {
    if prompt.value.trim().is_empty() {
        invalid(
            Some(&prompt.referenced),
            "field `prompt`: must not be empty".to_owned(),
        );
    }
    let templates = [("prompt", Some(&prompt)), ("system", f.system.as_ref())];
    for (field, text) in templates {
        if let Some(text) = text
            && let Err(e) = cascade_eval::Template::parse(&text.value)
        {
            invalid(
                Some(&text.referenced),
                format!("field `{field}`: {}", sanitize(&e.to_string())),
            );
        }
    }
    let output = match f.output.as_ref().map(|o| o.value.trim()) {
        None | Some("text") => ModelOutput::Text,
        Some("json") => ModelOutput::Json,
        Some(other) => {
            invalid(
                f.output.as_ref().map(|o| &o.referenced),
                format!(
                    "field `output`: expected `text` or `json`, found {:?}",
                    sanitize(other)
                ),
            );
            ModelOutput::Text
        }
    };
    if let Some(m) = &f.model
        && m.value.trim().is_empty()
    {
        invalid(
            Some(&m.referenced),
            "field `model`: must not be empty".to_owned(),
        );
    }
    if let Some(n) = &f.max_tokens
        && n.value == 0
    {
        invalid(
            Some(&n.referenced),
            "field `max_tokens`: must be greater than zero".to_owned(),
        );
    }
    if let Some(t) = &f.temperature
        && !(t.value.is_finite() && (0.0..=2.0).contains(&t.value))
    {
        invalid(
            Some(&t.referenced),
            format!(
                "field `temperature`: expected a number from 0 to 2, found {}",
                t.value
            ),
        );
    }
    SkillKind::Model(ModelSkill {
        prompt: prompt.value,
        system: f.system.map(|s| s.value),
        output,
        model: f.model.map(|m| m.value.trim().to_owned()),
        max_tokens: f.max_tokens.map(|n| n.value),
        temperature: f.temperature.map(|t| t.value).filter(|t| t.is_finite()),
    })
}

fn whole_file(path: &Path) -> FilePos {
    FilePos {
        path: path.to_owned(),
        line: 0,
        column: 0,
    }
}

fn at(path: &Path, loc: &Location) -> FilePos {
    FilePos {
        path: path.to_owned(),
        line: loc.line(),
        column: loc.column(),
    }
}

/// Turns a serde-saphyr error into `path:line:col: [field `f`: ]message`.
fn parse_error(path: &Path, text: &str, err: &serde_saphyr::Error) -> SkillLoadError {
    let mut inner = err;
    while let serde_saphyr::Error::WithSnippet { error, .. }
    | serde_saphyr::Error::AliasError { error, .. } = inner
    {
        inner = error;
    }
    let loc = inner.location().or_else(|| err.location());
    let message = match inner {
        serde_saphyr::Error::SerdeUnknownField { field, .. } => {
            let mut m = format!("unknown field `{field}`");
            if let Some(s) = did_you_mean(field, FIELDS.iter().copied()) {
                m.push_str(&format!(", did you mean `{s}`?"));
            } else {
                m.push_str(&format!(", expected one of: {}", FIELDS.join(", ")));
            }
            m
        }
        other => {
            let m = sanitize(&serde_saphyr::DefaultMessageFormatter.format_message(other));
            match loc.as_ref().and_then(|l| field_at(text, l)) {
                Some(field) if !m.contains("field") => format!("field `{field}`: {m}"),
                _ => m,
            }
        }
    };
    let at = loc.map_or_else(|| whole_file(path), |l| at(path, &l));
    SkillLoadError::Invalid { at, message }
}

/// The top-level field whose value contains `loc`: the last top-level key before it.
///
/// Only called on the error path; parses the document a second time for its keys.
fn field_at(text: &str, loc: &Location) -> Option<String> {
    let keys: TopKeys = serde_saphyr::from_str_with_options(text, parse_options()).ok()?;
    let pos = (loc.line(), loc.column());
    keys.0
        .into_iter()
        .filter(|(_, l)| (l.line(), l.column()) <= pos)
        .max_by_key(|(_, l)| (l.line(), l.column()))
        .map(|(k, _)| k)
        .filter(|k| FIELDS.contains(&k.as_str()))
}

/// Top-level keys of a mapping and where each one is.
struct TopKeys(Vec<(String, Location)>);

impl<'de> Deserialize<'de> for TopKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TopKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopKeys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    keys.push((key.value, key.referenced));
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(TopKeys(keys))
            }
        }
        d.deserialize_map(V)
    }
}

/// Declared input names: a list of names, or a map whose keys are the names (the values,
/// e.g. descriptions or types, are informational and ignored).
#[derive(Debug)]
struct Names(Vec<String>);

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Names;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of input names or a map keyed by input name")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Names, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                Ok(Names(names))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Names, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    names.push(n);
                }
                Ok(Names(names))
            }
        }
        d.deserialize_any(V)
    }
}

/// A skill's `timeout`: integer seconds, or a number with a unit (`500ms`, `30s`, `5m`,
/// `1h`).
#[derive(Debug)]
struct SkillTimeout(Duration);

impl<'de> Deserialize<'de> for SkillTimeout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SkillTimeout;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SkillTimeout, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SkillTimeout, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<SkillTimeout, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SkillTimeout, E> {
                parse_duration(v).map(SkillTimeout).map_err(|why| {
                    E::custom(format!(
                        "field `timeout`: {} (e.g. `30`, `500ms`, `5m`, `1h30m`)",
                        sanitize(&why.to_string())
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        let table = [
            ("rnu", Some("run")),
            ("comand", Some("command")),
            ("timout", Some("timeout")),
            ("descripton", Some("description")),
            ("nmae", Some("name")),
            ("zzz", None),
            ("environment", None),
        ];
        for (word, want) in table {
            assert_eq!(did_you_mean(word, FIELDS.iter().copied()), want, "{word}");
        }
    }
}
