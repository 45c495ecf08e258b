//! Parsing and validating a models file.
//!
//! The file is read (bounded) and parsed by serde-saphyr under the skill files' budget into
//! a generic tree whose every node knows its line and column ([`Node`]); all validation is
//! then ours, so every problem of every model is reported at once, not just the first one
//! serde meets. Only a YAML syntax error (or a budget overrun) stops early.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, MessageFormatter, Spanned};

use super::{MAX_MODELS_FILE_BYTES, ModelDef, ModelsFileError, Provider, RateLimit};
use crate::duration::parse_nonzero_duration as parse_duration;
use crate::files::sanitize;
use crate::suggest::did_you_mean;

fn parse_options() -> serde_saphyr::Options {
    crate::files::small_file_options(MAX_MODELS_FILE_BYTES)
}

/// Fields of one model, for unknown-field messages and did-you-mean.
const MODEL_FIELDS: &[&str] = &[
    "provider",
    "model",
    "context",
    "max_output",
    "capabilities",
    "price",
    "key_env",
    "key_required",
    "base_url",
    "rate_limit",
    "timeout",
    "fallback",
    "command",
    "description",
];

const TOP_FIELDS: &[&str] = &["models"];
const PRICE_FIELDS: &[&str] = &["input", "output"];
const CAPABILITIES: &[&str] = &["search", "media", "reasoning", "code"];

pub(super) fn read_bounded(path: &Path) -> Result<String, ModelsFileError> {
    let unreadable = |source| ModelsFileError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    // Never read past the limit, even if the file grows while we read it.
    file.take(MAX_MODELS_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_MODELS_FILE_BYTES {
        return Err(ModelsFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    String::from_utf8(bytes).map_err(|_| ModelsFileError::NotUtf8 {
        path: path.to_owned(),
    })
}

/// Parses and validates a whole file: every model, or every problem.
pub(super) fn parse(text: &str, origin: &Path) -> Result<BTreeMap<String, ModelDef>, Vec<String>> {
    let root: Option<Spanned<Node>> = serde_saphyr::from_str_with_options(text, parse_options())
        .map_err(|e| vec![syntax_error(origin, &e)])?;
    let mut v = Validator {
        origin,
        errors: Vec::new(),
    };
    let models = match root {
        Some(root) => v.file(&root),
        None => {
            v.whole("models file is empty: expected a `models:` mapping");
            BTreeMap::new()
        }
    };
    if v.errors.is_empty() {
        Ok(models)
    } else {
        Err(v.errors)
    }
}

fn syntax_error(origin: &Path, err: &serde_saphyr::Error) -> String {
    let mut inner = err;
    while let serde_saphyr::Error::WithSnippet { error, .. }
    | serde_saphyr::Error::AliasError { error, .. } = inner
    {
        inner = error;
    }
    let message = sanitize(&serde_saphyr::DefaultMessageFormatter.format_message(inner));
    match inner.location().or_else(|| err.location()) {
        Some(l) if l.line() > 0 => {
            format!(
                "{}:{}:{}: {message}",
                origin.display(),
                l.line(),
                l.column()
            )
        }
        _ => format!("{}: {message}", origin.display()),
    }
}

/// A YAML/JSON node with the location of every value inside it.
#[derive(Debug)]
enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "a boolean",
            Node::Int(_) | Node::Float(_) => "a number",
            Node::Str(_) => "a string",
            Node::Seq(_) => "a list",
            Node::Map(_) => "a mapping",
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Int(v.into()))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
                Ok(Node::Int(i128::try_from(v).unwrap_or(i128::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Node>>()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<Spanned<Node>>()?;
                    entries.push((key, value));
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(V)
    }
}

/// Collects problems while turning nodes into model definitions.
struct Validator<'a> {
    origin: &'a Path,
    errors: Vec<String>,
}

impl Validator<'_> {
    fn at(&mut self, loc: &Location, field: &str, message: impl fmt::Display) {
        let origin = self.origin.display();
        let field = if field.is_empty() {
            String::new()
        } else {
            format!("{field}: ")
        };
        self.errors.push(if loc.line() == 0 {
            format!("{origin}: {field}{message}")
        } else {
            format!("{origin}:{}:{}: {field}{message}", loc.line(), loc.column())
        });
    }

    fn whole(&mut self, message: &str) {
        self.errors
            .push(format!("{}: {message}", self.origin.display()));
    }

    fn unknown(&mut self, key: &Spanned<String>, path: &str, known: &[&str]) {
        let name = sanitize(&key.value);
        let hint = match did_you_mean(&key.value, known.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("expected one of: {}", known.join(", ")),
        };
        self.at(
            &key.referenced,
            path,
            format!("unknown field `{name}`, {hint}"),
        );
    }

    fn file(&mut self, root: &Spanned<Node>) -> BTreeMap<String, ModelDef> {
        let Node::Map(entries) = &root.value else {
            let kind = root.value.kind();
            self.at(
                &root.referenced,
                "",
                format!("expected a mapping with `models:`, found {kind}"),
            );
            return BTreeMap::new();
        };
        let mut models_node = None;
        for (key, value) in entries {
            if key.value == "models" {
                models_node = Some(value);
            } else {
                self.unknown(key, "", TOP_FIELDS);
            }
        }
        let Some(models_node) = models_node else {
            self.whole("missing field `models`");
            return BTreeMap::new();
        };
        let Node::Map(models) = &models_node.value else {
            let kind = models_node.value.kind();
            self.at(
                &models_node.referenced,
                "models",
                format!("expected a mapping of model names, found {kind}"),
            );
            return BTreeMap::new();
        };
        let names: BTreeSet<&str> = models.iter().map(|(k, _)| k.value.as_str()).collect();
        let mut defs = BTreeMap::new();
        for (key, value) in models {
            if let Some(def) = self.model(key, value, &names) {
                defs.insert(def.name.clone(), def);
            }
        }
        defs
    }

    /// One model; `None` when it has problems (all of them recorded).
    fn model(
        &mut self,
        key: &Spanned<String>,
        node: &Spanned<Node>,
        names: &BTreeSet<&str>,
    ) -> Option<ModelDef> {
        let name = key.value.as_str();
        let path = format!("models.{}", sanitize(name));
        let before = self.errors.len();
        if name.trim().is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.at(
                &key.referenced,
                &path,
                format!("invalid model name {:?}", sanitize(name)),
            );
        }
        let Node::Map(entries) = &node.value else {
            let kind = node.value.kind();
            self.at(
                &node.referenced,
                &path,
                format!("expected a mapping, found {kind}"),
            );
            return None;
        };
        let mut fields: BTreeMap<&str, &Spanned<Node>> = BTreeMap::new();
        for (k, v) in entries {
            if MODEL_FIELDS.contains(&k.value.as_str()) {
                fields.insert(k.value.as_str(), v);
            } else {
                self.unknown(k, &path, MODEL_FIELDS);
            }
        }
        let mut f = Fields {
            v: self,
            path: &path,
            fields,
            at: &key.referenced,
        };
        let provider = f.provider();
        let def = f.build(name, provider.unwrap_or(Provider::Openai), names);
        (provider.is_some() && self.errors.len() == before).then_some(def)
    }
}

/// The fields of one model being validated.
struct Fields<'v, 'a> {
    v: &'v mut Validator<'a>,
    path: &'v str,
    fields: BTreeMap<&'v str, &'v Spanned<Node>>,
    /// The model's key, for problems with the model as a whole (a missing field).
    at: &'v Location,
}

impl<'v> Fields<'v, '_> {
    fn err(&mut self, node: &Spanned<Node>, field: &str, message: impl fmt::Display) {
        let path = format!("{}.{field}", self.path);
        self.v.at(&node.referenced, &path, message);
    }

    fn missing(&mut self, field: &str) {
        let (path, at) = (self.path.to_owned(), *self.at);
        self.v.at(&at, &path, format!("missing field `{field}`"));
    }

    fn get(&self, field: &str) -> Option<&'v Spanned<Node>> {
        self.fields.get(field).copied()
    }

    fn string(&mut self, field: &str) -> Option<String> {
        let node = self.get(field)?;
        match &node.value {
            Node::Str(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Node::Str(_) => {
                self.err(node, field, "must not be empty");
                None
            }
            other => {
                let kind = other.kind();
                self.err(node, field, format!("expected a string, found {kind}"));
                None
            }
        }
    }

    fn positive_int(&mut self, field: &str) -> Option<u64> {
        let node = self.get(field)?;
        match &node.value {
            Node::Int(n) if *n > 0 => u64::try_from(*n).ok(),
            other => {
                let shown = shown(other);
                self.err(
                    node,
                    field,
                    format!("expected a positive whole number of tokens, found {shown}"),
                );
                None
            }
        }
    }

    fn provider(&mut self) -> Option<Provider> {
        let Some(node) = self.get("provider") else {
            self.missing("provider");
            return None;
        };
        let name = self.string("provider")?;
        let provider = Provider::from_name(&name);
        if provider.is_none() {
            let known: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
            let hint = match did_you_mean(&name, known.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("expected one of: {}", known.join(", ")),
            };
            self.err(
                node,
                "provider",
                format!("unknown provider `{}`, {hint}", sanitize(&name)),
            );
        }
        provider
    }

    fn build(&mut self, name: &str, provider: Provider, names: &BTreeSet<&str>) -> ModelDef {
        let model_id = self.string("model").unwrap_or_default();
        if model_id.is_empty() && !provider.is_cli() && self.get("model").is_none() {
            self.missing("model");
        }
        let context = self.positive_int("context");
        if context.is_none() && self.get("context").is_none() {
            self.missing("context");
        }
        let (price_in, price_out) = self.price();
        let (key_env, key_required) = self.key(provider);
        ModelDef {
            name: name.to_owned(),
            provider,
            model_id,
            context: context.unwrap_or(1),
            max_output: self.positive_int("max_output"),
            capabilities: self.capabilities(),
            price_in_per_1k: price_in,
            price_out_per_1k: price_out,
            key_env,
            key_required,
            base_url: self.base_url(provider),
            rate_limit: self.rate_limit(),
            timeout: self.timeout().unwrap_or(provider.default_timeout()),
            fallback: self.fallback(name, names),
            command: self.command(provider),
            description: self.string("description"),
        }
    }

    fn price(&mut self) -> (f64, f64) {
        let Some(node) = self.get("price") else {
            return (0.0, 0.0);
        };
        let Node::Map(entries) = &node.value else {
            let kind = node.value.kind();
            self.err(
                node,
                "price",
                format!("expected `{{input: USD, output: USD}}` per 1k tokens, found {kind}"),
            );
            return (0.0, 0.0);
        };
        let (mut input, mut output) = (0.0, 0.0);
        for (k, v) in entries {
            let slot = match k.value.as_str() {
                "input" => &mut input,
                "output" => &mut output,
                _ => {
                    let path = format!("{}.price", self.path);
                    self.v.unknown(k, &path, PRICE_FIELDS);
                    continue;
                }
            };
            match v.value {
                Node::Int(n) if n >= 0 => *slot = n as f64,
                Node::Float(x) if x.is_finite() && x >= 0.0 => *slot = x,
                ref other => {
                    let shown = shown(other);
                    let field = format!("price.{}", k.value);
                    self.err(
                        v,
                        &field,
                        format!("expected USD per 1k tokens (a number >= 0), found {shown}"),
                    );
                }
            }
        }
        (input, output)
    }

    fn capabilities(&mut self) -> Vec<String> {
        let Some(node) = self.get("capabilities") else {
            return Vec::new();
        };
        let Node::Seq(items) = &node.value else {
            let kind = node.value.kind();
            self.err(
                node,
                "capabilities",
                format!("expected a list, found {kind}"),
            );
            return Vec::new();
        };
        let mut caps = Vec::new();
        for item in items {
            match &item.value {
                Node::Str(s) if CAPABILITIES.contains(&s.as_str()) => caps.push(s.clone()),
                other => {
                    let hint = match other {
                        Node::Str(s) => did_you_mean(s, CAPABILITIES.iter().copied())
                            .map(|c| format!(", did you mean `{c}`?"))
                            .unwrap_or_default(),
                        _ => String::new(),
                    };
                    let shown = shown(other);
                    self.err(
                        item,
                        "capabilities",
                        format!(
                            "unknown capability {shown}{hint} (expected {})",
                            CAPABILITIES.join(", ")
                        ),
                    );
                }
            }
        }
        caps
    }

    /// `key_env` (a variable name, or `none`) and `key_required` (default true).
    fn key(&mut self, provider: Provider) -> (Option<String>, bool) {
        let required = match self.get("key_required") {
            None => true,
            Some(node) => match node.value {
                Node::Bool(b) => b,
                ref other => {
                    let shown = shown(other);
                    self.err(
                        node,
                        "key_required",
                        format!("expected true or false, found {shown}"),
                    );
                    true
                }
            },
        };
        if provider.is_cli() {
            for field in ["key_env", "key_required"] {
                if let Some(node) = self.get(field) {
                    self.err(node, field, format!(
                        "only for HTTP providers: the {provider} agent reads its own credentials"
                    ));
                }
            }
            return (None, false);
        }
        let Some(node) = self.get("key_env") else {
            return (provider.default_key_env().map(str::to_owned), required);
        };
        let var = self.string("key_env");
        match var.as_deref() {
            Some("none") => (None, false),
            Some(v) if is_env_name(v) => (Some(v.to_owned()), required),
            Some(v) => {
                self.err(node, "key_env", format!(
                    "invalid variable name {:?} (letters, digits and `_`; or `none` for no key)",
                    sanitize(v)
                ));
                (None, required)
            }
            None => (None, required),
        }
    }

    fn base_url(&mut self, provider: Provider) -> Option<String> {
        let node = self.get("base_url");
        if provider.is_cli() {
            if let Some(node) = node {
                self.err(
                    node,
                    "base_url",
                    format!("only for HTTP providers, not {provider}"),
                );
            }
            return None;
        }
        let Some(node) = node else {
            return provider.default_base_url().map(str::to_owned);
        };
        let url = self.string("base_url")?;
        if !(url.starts_with("http://") || url.starts_with("https://"))
            || url.contains(char::is_whitespace)
        {
            self.err(
                node,
                "base_url",
                format!(
                    "expected an http:// or https:// URL, found {:?}",
                    sanitize(&url)
                ),
            );
            return None;
        }
        Some(url.trim_end_matches('/').to_owned())
    }

    fn rate_limit(&mut self) -> Option<RateLimit> {
        let node = self.get("rate_limit")?;
        let text = self.string("rate_limit")?;
        let parsed = parse_rate_limit(&text);
        if parsed.is_none() {
            self.err(
                node,
                "rate_limit",
                format!(
                    "invalid rate limit {:?} (expected `N/s`, `N/min` or `N/h`, e.g. `50/min`)",
                    sanitize(&text)
                ),
            );
        }
        parsed
    }

    fn timeout(&mut self) -> Option<Duration> {
        let node = self.get("timeout")?;
        let text = match &node.value {
            Node::Int(n) => n.to_string(),
            Node::Float(x) => x.to_string(),
            Node::Str(s) => s.clone(),
            other => {
                let kind = other.kind();
                self.err(
                    node,
                    "timeout",
                    format!("expected a duration, found {kind}"),
                );
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(why) => {
                self.err(
                    node,
                    "timeout",
                    format!(
                        "{} (e.g. `30`, `500ms`, `5m`, `1h30m`)",
                        sanitize(&why.to_string())
                    ),
                );
                None
            }
        }
    }

    fn fallback(&mut self, name: &str, names: &BTreeSet<&str>) -> Option<String> {
        let node = self.get("fallback")?;
        let target = self.string("fallback")?;
        if target == name {
            self.err(node, "fallback", "a model cannot fall back to itself");
            return None;
        }
        if !names.contains(target.as_str()) {
            let known: Vec<&str> = names.iter().copied().collect();
            let hint = did_you_mean(&target, known.iter().copied())
                .map(|s| format!(", did you mean `{s}`?"))
                .unwrap_or_default();
            self.err(
                node,
                "fallback",
                format!("unknown model `{}`{hint}", sanitize(&target)),
            );
            return None;
        }
        Some(target)
    }

    fn command(&mut self, provider: Provider) -> Option<String> {
        let node = self.get("command")?;
        if !provider.is_cli() {
            self.err(
                node,
                "command",
                format!(
                    "only for CLI providers (claude-cli, codex-cli, gemini-cli), not {provider}"
                ),
            );
            return None;
        }
        self.string("command")
    }
}

/// A node shown in a message: scalars by value, the rest by kind.
fn shown(node: &Node) -> String {
    match node {
        Node::Int(n) => n.to_string(),
        Node::Float(x) => x.to_string(),
        Node::Str(s) => format!("{:?}", sanitize(s)),
        Node::Bool(b) => b.to_string(),
        other => other.kind().to_owned(),
    }
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `50/min`, `5/s`, `1000/h` (also `sec`, `second`, `minute`, `hour`).
pub(super) fn parse_rate_limit(s: &str) -> Option<RateLimit> {
    let (count, unit) = s.split_once('/')?;
    let count: u32 = count.trim().parse().ok().filter(|n| *n > 0)?;
    let secs = match unit.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        _ => return None,
    };
    Some(RateLimit {
        count,
        per: Duration::from_secs(secs),
    })
}
