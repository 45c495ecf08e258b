//! Reading cascade files from disk: size limits, parsing, normalising and
//! resolving `cascade: NAME` sub-cascades beside the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::diag::Diagnostic;
use super::fields::Reader;
use super::model::Cascade;
use super::normalize;
use super::yaml::{self, MAX_FILE_BYTES};

/// A loaded cascade (absent when it could not be read at all), every
/// diagnostic found, and the source texts for rendering snippets.
#[derive(Debug, Default)]
pub struct Loaded {
    pub cascade: Option<Cascade>,
    pub diagnostics: Vec<Diagnostic>,
    pub sources: BTreeMap<String, String>,
}

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn render_diagnostics(&self) -> Vec<String> {
        self.diagnostics
            .iter()
            .map(|d| {
                let src = d.loc.as_ref().and_then(|l| self.sources.get(&*l.file));
                d.render(src.map(String::as_str))
            })
            .collect()
    }
}

/// Most levels of `cascade: NAME` nesting followed.
const MAX_SUBCASCADE_DEPTH: usize = 16;

pub fn load_file(path: &Path) -> Loaded {
    let mut out = Loaded::default();
    let mut stack = Vec::new();
    out.cascade = load_inner(path, &mut out, &mut stack);
    out
}

/// Loads from text already in memory (tests, stdin); `path` names it in
/// messages and anchors sub-cascade resolution.
pub fn load_str(path: &Path, text: &str) -> Loaded {
    let mut out = Loaded::default();
    let mut stack = vec![path.to_path_buf()];
    out.cascade = parse_and_resolve(path, text, &mut out, &mut stack);
    out
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn load_inner(path: &Path, out: &mut Loaded, stack: &mut Vec<PathBuf>) -> Option<Cascade> {
    let name = display(path);
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            out.diagnostics.push(Diagnostic::error(
                None,
                "",
                format!("cannot read `{name}`: {e}"),
            ));
            return None;
        }
    };
    if !meta.is_file() {
        out.diagnostics.push(Diagnostic::error(
            None,
            "",
            format!("`{name}` is not a file"),
        ));
        return None;
    }
    if meta.len() > MAX_FILE_BYTES {
        out.diagnostics.push(Diagnostic::error(
            None,
            "",
            format!(
                "`{name}` is {} bytes; cascade files are limited to {MAX_FILE_BYTES} bytes",
                meta.len()
            ),
        ));
        return None;
    }
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            out.diagnostics.push(Diagnostic::error(
                None,
                "",
                format!("cannot read `{name}`: {e}"),
            ));
            return None;
        }
    };
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            out.diagnostics.push(Diagnostic::error(
                None,
                "",
                format!(
                    "`{name}` is not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            ));
            return None;
        }
    };
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    stack.push(canonical);
    let c = parse_and_resolve(path, &text, out, stack);
    stack.pop();
    c
}

fn parse_and_resolve(
    path: &Path,
    text: &str,
    out: &mut Loaded,
    stack: &mut Vec<PathBuf>,
) -> Option<Cascade> {
    let file: Arc<str> = Arc::from(display(path));
    out.sources.insert(file.to_string(), text.to_owned());
    let root = match yaml::parse(&file, text) {
        Ok(Some(root)) => root,
        Ok(None) => {
            out.diagnostics.push(Diagnostic::error(
                Some(yaml::Loc::new(&file, 1, 1)),
                "",
                "the file is empty",
            ));
            return None;
        }
        Err(failures) => {
            // The seed's prose examples (`1. model: "task" (parallel)`) are
            // often not even YAML; say what they are rather than only where
            // the parser gave up.
            let numbered = text.lines().any(|l| {
                let l = l.trim_start();
                normalize::is_numbered(l)
                    && l.trim_start_matches(|c: char| c.is_ascii_digit())
                        .starts_with(". ")
            });
            out.diagnostics.extend(failures.into_iter().map(|f| {
                let message = if numbered && f.message.starts_with("malformed YAML") {
                    format!("{}{}", f.message, normalize::NUMBERED_LIST_HINT)
                } else {
                    f.message
                };
                Diagnostic::error(Some(f.loc), "", message)
            }));
            return None;
        }
    };
    let mut reader = Reader::new();
    let cascade = normalize::document(&mut reader, &root, path);
    out.diagnostics.append(&mut reader.diags);
    let mut cascade = cascade?;
    resolve_subcascades(&mut cascade, out, stack);
    Some(cascade)
}

fn resolve_subcascades(cascade: &mut Cascade, out: &mut Loaded, stack: &mut Vec<PathBuf>) {
    let refs: Vec<(String, yaml::Loc)> = cascade
        .all_stages()
        .into_iter()
        .filter_map(|s| s.cascade.clone())
        .collect();
    for (name, loc) in refs {
        if cascade.subcascades.contains_key(&name) {
            continue;
        }
        let Some(path) = find_beside(&cascade.dir, &name) else {
            out.diagnostics.push(Diagnostic::error(
                Some(loc),
                "cascade",
                format!("sub-cascade `{name}` not found: looked for {name}.yaml, {name}.yml, {name}.json and {name} in `{}`", display_dir(&cascade.dir)),
            ));
            continue;
        };
        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
        if let Some(pos) = stack.iter().position(|p| *p == canonical) {
            let cycle: Vec<String> = stack[pos..]
                .iter()
                .chain(std::iter::once(&canonical))
                .map(|p| file_name(p))
                .collect();
            out.diagnostics.push(Diagnostic::error(
                Some(loc),
                "cascade",
                format!("sub-cascades form a cycle: {}", cycle.join(" -> ")),
            ));
            continue;
        }
        if stack.len() >= MAX_SUBCASCADE_DEPTH {
            out.diagnostics.push(Diagnostic::error(
                Some(loc),
                "cascade",
                format!("sub-cascades nest deeper than {MAX_SUBCASCADE_DEPTH} levels"),
            ));
            continue;
        }
        if let Some(sub) = load_inner(&path, out, stack) {
            cascade.subcascades.insert(name, sub);
        }
    }
}

fn display_dir(dir: &Path) -> String {
    if dir.as_os_str().is_empty() {
        ".".into()
    } else {
        display(dir)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| display(p), |n| n.to_string_lossy().into_owned())
}

fn find_beside(dir: &Path, name: &str) -> Option<PathBuf> {
    if name.contains("..") && Path::new(name).is_absolute() {
        return None;
    }
    for candidate in [
        format!("{name}.yaml"),
        format!("{name}.yml"),
        format!("{name}.json"),
        name.to_owned(),
    ] {
        let p = dir.join(&candidate);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}
