//! Reading cascade files, from disk or from an in-memory bundle (a swarm
//! submission): size limits, parsing, normalising and resolving
//! `cascade: NAME` sub-cascades beside the file.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use super::diag::Diagnostic;
use super::fields::Reader;
use super::model::Cascade;
use super::normalize;
use super::yaml::{self, MAX_FILE_BYTES};

/// Why a cascade file could not be read at all: the whole message of the
/// diagnostic it becomes, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read `{}`: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is not a file", path.display())]
    NotAFile { path: PathBuf },
    #[error("`{}` is not UTF-8 text (invalid byte at offset {offset})", path.display())]
    NotUtf8 { path: PathBuf, offset: usize },
    #[error("`{}` is {len} bytes; cascade files are limited to {MAX_FILE_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf, len: u64 },
    #[error("cannot read `{}`: not in the submitted bundle", path.display())]
    NotInBundle { path: PathBuf },
}

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

/// Where the loader reads files: the disk, or a bundle held in memory (a
/// submission). Everything else (parsing, resolution, cycle and depth
/// checks, diagnostics) is shared, so a bundle loads exactly as its files
/// would from disk.
trait FileSource {
    /// The file's text, or why it cannot be read.
    fn read(&self, path: &Path) -> Result<String, LoadError>;
    fn is_file(&self, path: &Path) -> bool;
    /// What identifies a file, for cycle detection.
    fn identity(&self, path: &Path) -> PathBuf;
}

/// The file system; optionally remembers every file it read (bundling).
#[derive(Default)]
struct Disk {
    recorded: Option<RefCell<Vec<(PathBuf, String)>>>,
}

impl FileSource for Disk {
    fn read(&self, path: &Path) -> Result<String, LoadError> {
        let unreadable = |source| LoadError::Unreadable {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(unreadable)?;
        if !meta.is_file() {
            return Err(LoadError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        check_size(path, meta.len())?;
        let bytes = std::fs::read(path).map_err(unreadable)?;
        let text = String::from_utf8(bytes).map_err(|e| LoadError::NotUtf8 {
            path: path.to_path_buf(),
            offset: e.utf8_error().valid_up_to(),
        })?;
        if let Some(rec) = &self.recorded {
            rec.borrow_mut().push((path.to_path_buf(), text.clone()));
        }
        Ok(text)
    }

    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }

    fn identity(&self, path: &Path) -> PathBuf {
        path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
    }
}

/// Files in memory, named by paths relative to the main file's folder.
struct Bundle<'a> {
    files: &'a BTreeMap<String, String>,
}

impl Bundle<'_> {
    fn get(&self, path: &Path) -> Option<&String> {
        self.files.get(&bundle_name(path)?)
    }
}

impl FileSource for Bundle<'_> {
    fn read(&self, path: &Path) -> Result<String, LoadError> {
        let text = self.get(path).ok_or_else(|| LoadError::NotInBundle {
            path: path.to_path_buf(),
        })?;
        check_size(path, text.len() as u64)?;
        Ok(text.clone())
    }

    fn is_file(&self, path: &Path) -> bool {
        self.get(path).is_some()
    }

    fn identity(&self, path: &Path) -> PathBuf {
        bundle_name(path).map_or_else(|| path.to_path_buf(), PathBuf::from)
    }
}

fn check_size(path: &Path, len: u64) -> Result<(), LoadError> {
    if len > MAX_FILE_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(())
}

/// A relative path as a bundle key (`sub/x.yaml`): `.` dropped, `..`
/// applied; `None` when it is absolute or climbs out of the bundle.
fn bundle_name(path: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

pub fn load_file(path: &Path) -> Loaded {
    load_from(&Disk::default(), path)
}

/// Loads a cascade sent as a bundle (a [`Submission`]'s files): exactly as
/// [`load_file`] would from disk, with `cascade: NAME` resolved among
/// `files` and diagnostics naming the bundle's file names.
///
/// [`Submission`]: cascade_proto::wire::Submission
pub fn load_bundle(main: &str, files: &BTreeMap<String, String>) -> Loaded {
    load_from(&Bundle { files }, Path::new(main))
}

/// The main file and every sub-cascade it reaches, named relative to the
/// main file's folder: what a submission carries. `Err` holds the
/// diagnostics (as [`load_file`] reports them; boxed, as it is large) when
/// the cascade does not load without errors, or reaches a file outside its
/// folder.
pub fn collect_bundle(path: &Path) -> Result<(String, BTreeMap<String, String>), Box<Loaded>> {
    let disk = Disk {
        recorded: Some(RefCell::new(Vec::new())),
    };
    let mut out = load_from(&disk, path);
    if out.has_errors() {
        return Err(Box::new(out));
    }
    let base = path.parent().unwrap_or(Path::new(""));
    let main = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut files = BTreeMap::new();
    for (file, text) in disk.recorded.map(RefCell::into_inner).unwrap_or_default() {
        let rel = file.strip_prefix(base).ok().and_then(bundle_name);
        let Some(rel) = rel else {
            out.diagnostics.push(Diagnostic::error(
                None,
                "cascade",
                format!(
                    "`{}` is outside `{}`, the cascade's folder: it cannot be submitted \
                     (move the sub-cascade beside the cascade)",
                    display(&file),
                    display_dir(base)
                ),
            ));
            return Err(Box::new(out));
        };
        files.insert(rel, text);
    }
    Ok((main, files))
}

/// Loads from text already in memory (tests, stdin); `path` names it in
/// messages and anchors sub-cascade resolution.
pub fn load_str(path: &Path, text: &str) -> Loaded {
    let mut out = Loaded::default();
    let mut stack = vec![path.to_path_buf()];
    out.cascade = parse_and_resolve(&Disk::default(), path, text, &mut out, &mut stack);
    out
}

fn load_from(src: &dyn FileSource, path: &Path) -> Loaded {
    let mut out = Loaded::default();
    let mut stack = Vec::new();
    out.cascade = load_inner(src, path, &mut out, &mut stack);
    out
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn load_inner(
    src: &dyn FileSource,
    path: &Path,
    out: &mut Loaded,
    stack: &mut Vec<PathBuf>,
) -> Option<Cascade> {
    let text = match src.read(path) {
        Ok(t) => t,
        Err(e) => {
            out.diagnostics
                .push(Diagnostic::error(None, "", e.to_string()));
            return None;
        }
    };
    stack.push(src.identity(path));
    let c = parse_and_resolve(src, path, &text, out, stack);
    stack.pop();
    c
}

fn parse_and_resolve(
    src: &dyn FileSource,
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
    resolve_subcascades(src, &mut cascade, out, stack);
    Some(cascade)
}

fn resolve_subcascades(
    src: &dyn FileSource,
    cascade: &mut Cascade,
    out: &mut Loaded,
    stack: &mut Vec<PathBuf>,
) {
    let refs: Vec<(String, yaml::Loc)> = cascade
        .all_stages()
        .into_iter()
        .filter_map(|s| s.cascade.clone())
        .collect();
    for (name, loc) in refs {
        if cascade.subcascades.contains_key(&name) {
            continue;
        }
        let Some(path) = find_beside(src, &cascade.dir, &name) else {
            out.diagnostics.push(Diagnostic::error(
                Some(loc),
                "cascade",
                format!("sub-cascade `{name}` not found: looked for {name}.yaml, {name}.yml, {name}.json and {name} in `{}`", display_dir(&cascade.dir)),
            ));
            continue;
        };
        let canonical = src.identity(&path);
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
        if let Some(sub) = load_inner(src, &path, out, stack) {
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

fn find_beside(src: &dyn FileSource, dir: &Path, name: &str) -> Option<PathBuf> {
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
        if src.is_file(&p) {
            return Some(p);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{self, Format, PlanOptions};

    const MAIN: &str = "cascade: main\nstages:\n  - stage: audit\n    cascade: deep-audit\n  - stage: done\n    skill: echo\n    depends_on: [audit]\n";
    const DEEP: &str = "cascade: deep\nstages:\n  - stage: inner\n    cascade: parts/leaf\n";
    const LEAF: &str = "cascade: leaf\nstages:\n  - stage: leaf\n    skill: echo\n";

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, text) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        }
        dir
    }

    /// A plan as text and JSON, with the temporary folder taken out of
    /// the file names so disk and bundle plans compare.
    fn rendered(l: &Loaded, dir: &Path) -> String {
        let c = l.cascade.as_ref().expect("a cascade");
        let p = plan::compile(c, &PlanOptions::default());
        let prefix = format!("{}/", dir.display());
        (plan::render(&p, Format::Text) + &plan::render(&p, Format::Json)).replace(&prefix, "")
    }

    #[test]
    fn a_bundle_loads_to_the_same_plan_as_its_files_on_disk() {
        let dir = tree(&[
            ("main.yaml", MAIN),
            ("deep-audit.yaml", DEEP),
            ("parts/leaf.yml", LEAF),
            ("unrelated.yaml", "not: referenced"),
        ]);
        let main = dir.path().join("main.yaml");
        let (name, files) = collect_bundle(&main).expect("bundles");
        assert_eq!(name, "main.yaml");
        assert_eq!(
            files.keys().map(String::as_str).collect::<Vec<_>>(),
            ["deep-audit.yaml", "main.yaml", "parts/leaf.yml"]
        );
        let from_disk = load_file(&main);
        let from_bundle = load_bundle(&name, &files);
        assert!(!from_bundle.has_errors(), "{:?}", from_bundle.diagnostics);
        assert_eq!(
            rendered(&from_bundle, dir.path()),
            rendered(&from_disk, dir.path())
        );
        assert!(from_bundle.sources.contains_key("parts/leaf.yml"));
    }

    #[test]
    fn a_missing_sub_cascade_in_a_bundle_is_the_same_error() {
        let dir = tree(&[("main.yaml", MAIN)]);
        let main = dir.path().join("main.yaml");
        let on_disk = collect_bundle(&main).expect_err("the sub-cascade is missing");
        let files = BTreeMap::from([("main.yaml".to_owned(), MAIN.to_owned())]);
        let in_bundle = load_bundle("main.yaml", &files);
        let show = |l: &Loaded| -> Vec<String> {
            l.diagnostics
                .iter()
                .map(|d| d.to_string().replace(&display(dir.path()), "."))
                .map(|s| s.replace("./main.yaml", "main.yaml"))
                .collect()
        };
        assert_eq!(show(&in_bundle), show(&on_disk));
        assert!(show(&in_bundle)[0].contains("sub-cascade `deep-audit` not found"));
    }

    #[test]
    fn bundle_cycles_and_escapes_are_refused() {
        let files = BTreeMap::from([
            (
                "a.yaml".to_owned(),
                "cascade: a\nstages:\n  - stage: s\n    cascade: b\n".to_owned(),
            ),
            (
                "b.yaml".to_owned(),
                "cascade: b\nstages:\n  - stage: s\n    cascade: a\n".to_owned(),
            ),
        ]);
        let l = load_bundle("a.yaml", &files);
        assert!(
            l.diagnostics
                .iter()
                .any(|d| d.message.contains("a.yaml -> b.yaml -> a.yaml")),
            "{:?}",
            l.diagnostics
        );
        assert_eq!(bundle_name(Path::new("../x.yaml")), None);
        assert_eq!(bundle_name(Path::new("/etc/x.yaml")), None);
        assert_eq!(
            bundle_name(Path::new("./a/../b/c.yaml")).as_deref(),
            Some("b/c.yaml")
        );
    }
}
