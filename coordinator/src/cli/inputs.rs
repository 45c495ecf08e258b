//! Run inputs from `--inputs-file` and `--input name=value`.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::args::InputArgs;
use cascade_core::spec::yaml;

pub fn collect(a: &InputArgs) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    if let Some(file) = &a.inputs_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read inputs file `{}`: {e}", file.display()))?;
        let name: Arc<str> = Arc::from(file.display().to_string());
        match yaml::parse(&name, &text) {
            Ok(Some(node)) => match node.to_json() {
                Value::Object(m) => out.extend(m),
                _ => {
                    return Err(format!(
                        "inputs file `{}` must hold a mapping of names to values",
                        file.display()
                    ));
                }
            },
            Ok(None) => {}
            Err(failures) => {
                let first = failures
                    .first()
                    .map(|f| format!("{}: {}", f.loc, f.message))
                    .unwrap_or_default();
                return Err(format!("inputs file: {first}"));
            }
        }
    }
    for item in &a.input {
        let Some((name, raw)) = item.split_once('=') else {
            return Err(format!("--input `{item}`: expected NAME=VALUE"));
        };
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("--input `{item}`: the name is empty"));
        }
        let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
        out.insert(name.to_owned(), value);
    }
    Ok(out)
}
