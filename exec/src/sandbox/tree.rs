//! The sandbox copy of the project: copying it in, snapshots of its state, diffs between
//! states, putting an earlier state back, and writing the final state to the source.
//!
//! Excluded names ([`Exclude`]) are never copied, snapshotted, diffed or written. Symlinks
//! are copied as links only when they stay inside the tree; others are left out with a
//! warning, so nothing in the copy points back at the source. Files keep their mode.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use similar::TextDiff;
use walkdir::WalkDir;

/// Most bytes a snapshot holds: the loop keeps the accepted state in memory.
pub const MAX_TREE_BYTES: u64 = 512 * 1024 * 1024;

/// Which names are left out.
#[derive(Clone, Debug)]
pub struct Exclude(Vec<String>);

impl Exclude {
    pub fn new(patterns: &[String]) -> Self {
        Exclude(patterns.to_vec())
    }

    /// Whether a path (relative, `/`-separated) has an excluded component.
    pub fn excludes(&self, relative: &Path) -> bool {
        relative.components().any(|c| match c {
            Component::Normal(name) => name.to_str().is_some_and(|n| self.matches(n)),
            _ => false,
        })
    }

    fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|p| {
            if let Some(suffix) = p.strip_prefix('*') {
                name.ends_with(suffix)
            } else if let Some(prefix) = p.strip_suffix('*') {
                name.starts_with(prefix)
            } else {
                name == p
            }
        })
    }
}

/// One file of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    File { data: Vec<u8>, mode: u32 },
    Symlink(PathBuf),
}

/// The state of a tree: relative path -> entry (directories are implied).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub files: BTreeMap<String, Entry>,
}

/// A difference between two snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Unified diff, paths `a/...` and `b/...`.
    pub patch: String,
    pub files: Vec<String>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Copies `src` into `dst` (created). Returns warnings about what was left out.
pub fn copy_tree(src: &Path, dst: &Path, exclude: &Exclude) -> io::Result<Vec<String>> {
    let mut warnings = Vec::new();
    let src_real = fs::canonicalize(src)?;
    fs::create_dir_all(dst)?;
    let walker = WalkDir::new(&src_real)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            e.path()
                .strip_prefix(&src_real)
                .is_ok_and(|rel| !exclude.excludes(rel))
        });
    let mut dirs = Vec::new();
    for entry in walker {
        let entry = entry.map_err(io::Error::other)?;
        let Ok(rel) = entry.path().strip_prefix(&src_real) else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let target = dst.join(rel);
        let kind = entry.file_type();
        if kind.is_dir() {
            fs::create_dir_all(&target)?;
            dirs.push((
                target,
                entry.metadata().map_err(io::Error::other)?.permissions(),
            ));
        } else if kind.is_file() {
            fs::copy(entry.path(), &target)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(entry.path())?;
            if link_stays_inside(rel, &link) {
                std::os::unix::fs::symlink(&link, &target)?;
            } else {
                warnings.push(format!(
                    "symlink `{}` points outside the project and was not copied",
                    rel.display()
                ));
            }
        } else {
            warnings.push(format!(
                "`{}` is not a regular file and was not copied",
                rel.display()
            ));
        }
    }
    // Modes last: a read-only directory would refuse its own contents.
    for (dir, perms) in dirs.into_iter().rev() {
        fs::set_permissions(dir, perms)?;
    }
    Ok(warnings)
}

/// A relative link target that resolves inside the tree.
fn link_stays_inside(rel: &Path, link: &Path) -> bool {
    if link.is_absolute() {
        return false;
    }
    let mut depth: i64 = i64::try_from(rel.components().count()).unwrap_or(0) - 1;
    for c in link.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Reads the state of `root` (excluded names skipped).
pub fn snapshot(root: &Path, exclude: &Exclude) -> io::Result<Snapshot> {
    let mut snap = Snapshot::default();
    let mut total: u64 = 0;
    let walker = WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            e.path()
                .strip_prefix(root)
                .is_ok_and(|rel| !exclude.excludes(rel))
        });
    for entry in walker {
        let entry = entry.map_err(io::Error::other)?;
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let Some(key) = rel.to_str().map(str::to_owned) else {
            return Err(io::Error::other(format!(
                "path {} is not UTF-8",
                rel.display()
            )));
        };
        let kind = entry.file_type();
        if kind.is_file() {
            let data = fs::read(entry.path())?;
            total += u64::try_from(data.len()).unwrap_or(u64::MAX);
            if total > MAX_TREE_BYTES {
                return Err(io::Error::other(format!(
                    "the project is larger than {} MiB (use `exclude` for build outputs and data)",
                    MAX_TREE_BYTES >> 20
                )));
            }
            let mode = entry
                .metadata()
                .map_err(io::Error::other)?
                .permissions()
                .mode()
                & 0o7777;
            snap.files.insert(key, Entry::File { data, mode });
        } else if kind.is_symlink() {
            snap.files
                .insert(key, Entry::Symlink(fs::read_link(entry.path())?));
        }
    }
    Ok(snap)
}

/// What changed from `before` to `after`, as a unified diff.
pub fn diff(before: &Snapshot, after: &Snapshot) -> Change {
    let mut change = Change::default();
    let paths: std::collections::BTreeSet<&String> =
        before.files.keys().chain(after.files.keys()).collect();
    for path in paths {
        let (old, new) = (before.files.get(path), after.files.get(path));
        if old == new {
            continue;
        }
        change.files.push(path.clone());
        change.patch.push_str(&file_diff(path, old, new));
    }
    change
}

fn file_diff(path: &str, old: Option<&Entry>, new: Option<&Entry>) -> String {
    let mut out = format!("diff --git a/{path} b/{path}\n");
    let (old_mode, new_mode) = (old.map(mode_of), new.map(mode_of));
    match (old_mode, new_mode) {
        (None, Some(m)) => out.push_str(&format!("new file mode {m:06o}\n")),
        (Some(m), None) => out.push_str(&format!("deleted file mode {m:06o}\n")),
        (Some(a), Some(b)) if a != b => {
            out.push_str(&format!("old mode {a:06o}\nnew mode {b:06o}\n"))
        }
        _ => {}
    }
    let (old_text, new_text) = (old.map(text_of), new.map(text_of));
    let (Some(old_text), Some(new_text)) = (
        old_text.unwrap_or(Some(String::new())),
        new_text.unwrap_or(Some(String::new())),
    ) else {
        out.push_str(&format!("Binary files a/{path} and b/{path} differ\n"));
        return out;
    };
    if old_text == new_text {
        return out;
    }
    let from = if old.is_some() {
        format!("a/{path}")
    } else {
        "/dev/null".to_owned()
    };
    let to = if new.is_some() {
        format!("b/{path}")
    } else {
        "/dev/null".to_owned()
    };
    let text = TextDiff::from_lines(&old_text, &new_text);
    out.push_str(
        &text
            .unified_diff()
            .context_radius(3)
            .header(&from, &to)
            .to_string(),
    );
    out
}

fn mode_of(entry: &Entry) -> u32 {
    match entry {
        Entry::File { mode, .. } => 0o100000 | (mode & 0o777),
        Entry::Symlink(_) => 0o120000,
    }
}

/// The text of an entry, `None` for binary data.
fn text_of(entry: &Entry) -> Option<String> {
    match entry {
        Entry::File { data, .. } if !data.contains(&0) => String::from_utf8(data.clone()).ok(),
        Entry::File { .. } => None,
        Entry::Symlink(target) => Some(target.to_string_lossy().into_owned()),
    }
}

/// Makes the tree at `root` match `target` again, given its `current` state.
pub fn restore(root: &Path, current: &Snapshot, target: &Snapshot) -> io::Result<()> {
    for path in current.files.keys() {
        if !target.files.contains_key(path) {
            remove_entry(&root.join(path))?;
        }
    }
    for (path, entry) in &target.files {
        if current.files.get(path) != Some(entry) {
            write_entry(&root.join(path), entry)?;
        }
    }
    Ok(())
}

fn remove_entry(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes one entry, replacing whatever is at `path` (a directory there is an error).
pub fn write_entry(path: &Path, entry: &Entry) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    if fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()) {
        fs::remove_file(path)?;
    }
    match entry {
        Entry::File { data, mode } => {
            fs::write(path, data)?;
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
        }
        Entry::Symlink(target) => std::os::unix::fs::symlink(target, path),
    }
}

/// Why a path, a proposal or the final apply was refused; the text names the
/// path (relative to the project unless it says otherwise).
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("path `{0}` must be relative to the project")]
    NotRelative(String),
    #[error("path `{0}` leaves the project")]
    Leaves(String),
    #[error("path `{0}` is excluded from the sandbox")]
    Excluded(String),
    #[error("path `{0}` goes through a symlink")]
    ThroughSymlink(String),
    #[error("`{0}` changed in the source while the loop ran; not applying")]
    ChangedInSource(String),
    #[error("`{path}` is a symlink to `{}`, outside the project; not applying", to.display())]
    SymlinkOutside { path: String, to: PathBuf },
    #[error(transparent)]
    Diff(#[from] cascade_core::diff::DiffError),
    #[error("cannot read `{path}` to patch it: {source}")]
    ReadToPatch {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A file operation on `path` (`read`, `write`, `create`, `replace`, `remove`).
    #[error("cannot {op} `{}`: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl TreeError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| TreeError::Io { op, path, source }
    }
}

/// Writes every difference between `base` (the source as copied) and `done` to `source`,
/// all or nothing: new contents go to temporary files next to their targets first, then
/// are renamed over them. A file changed in the source since the copy stops everything.
pub fn apply_to_source(
    source: &Path,
    base: &Snapshot,
    done: &Snapshot,
    exclude: &Exclude,
) -> Result<Vec<String>, TreeError> {
    let now = snapshot(source, exclude).map_err(TreeError::io("read", source))?;
    let change = diff(base, done);
    for path in &change.files {
        if now.files.get(path) != base.files.get(path) {
            return Err(TreeError::ChangedInSource(path.clone()));
        }
    }
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let stage = |staged: &mut Vec<(PathBuf, PathBuf)>| -> Result<(), TreeError> {
        for path in &change.files {
            let Some(entry) = done.files.get(path) else {
                continue;
            };
            // Never write through a symlink of the source, nor leave a
            // link that points out of it.
            let target = inside(source, path, exclude)?;
            if let Entry::Symlink(to) = entry
                && (to.is_absolute() || to.components().any(|c| matches!(c, Component::ParentDir)))
            {
                return Err(TreeError::SymlinkOutside {
                    path: path.clone(),
                    to: to.clone(),
                });
            }
            let name = target
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("file");
            let tmp = target.with_file_name(format!(".{name}.cascade-{}", std::process::id()));
            write_entry(&tmp, entry).map_err(TreeError::io("write", &tmp))?;
            staged.push((tmp, target));
        }
        Ok(())
    };
    if let Err(e) = stage(&mut staged) {
        for (tmp, _) in &staged {
            let _ = fs::remove_file(tmp);
        }
        return Err(e);
    }
    for (i, (tmp, target)) in staged.iter().enumerate() {
        if let Err(e) = fs::rename(tmp, target) {
            for (left, _) in &staged[i..] {
                let _ = fs::remove_file(left);
            }
            return Err(TreeError::io("replace", target)(e));
        }
    }
    for path in &change.files {
        if !done.files.contains_key(path) {
            let target = inside(source, path, exclude)?;
            remove_entry(&target).map_err(TreeError::io("remove", path))?;
        }
    }
    Ok(change.files)
}

/// `relative` as a path inside `root`, refusing anything that could leave it: absolute
/// paths, `..`, excluded names, and existing symlinks on the way.
pub fn inside(root: &Path, relative: &str, exclude: &Exclude) -> Result<PathBuf, TreeError> {
    let rel = Path::new(relative);
    if relative.is_empty() || rel.is_absolute() {
        return Err(TreeError::NotRelative(relative.to_owned()));
    }
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(TreeError::Leaves(relative.to_owned()));
    }
    if exclude.excludes(rel) {
        return Err(TreeError::Excluded(relative.to_owned()));
    }
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(TreeError::ThroughSymlink(relative.to_owned()));
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exclude() -> Exclude {
        Exclude::new(&["target".into(), ".git".into(), "*.pyc".into()])
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    }

    #[test]
    fn copy_snapshot_diff_restore() {
        let src = tempfile::tempdir().expect("tmp");
        let dst = tempfile::tempdir().expect("tmp");
        write(src.path(), "src/lib.rs", "fn a() {}\nfn b() {}\n");
        write(src.path(), "run.sh", "#!/bin/sh\n");
        fs::set_permissions(src.path().join("run.sh"), fs::Permissions::from_mode(0o755))
            .expect("chmod");
        write(src.path(), "target/debug/x", "build output");
        write(src.path(), "m.pyc", "bytecode");
        std::os::unix::fs::symlink("src/lib.rs", src.path().join("inner")).expect("link");
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("outer")).expect("link");
        std::os::unix::fs::symlink("../../x", src.path().join("src/up")).expect("link");

        let work = dst.path().join("work");
        let warnings = copy_tree(src.path(), &work, &exclude()).expect("copy");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(!work.join("target").exists() && !work.join("m.pyc").exists());
        assert!(!work.join("outer").exists() && work.join("inner").is_symlink());
        let mode = fs::metadata(work.join("run.sh"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);

        let base = snapshot(&work, &exclude()).expect("snapshot");
        assert_eq!(
            base.files.keys().collect::<Vec<_>>(),
            ["inner", "run.sh", "src/lib.rs"]
        );
        write(&work, "src/lib.rs", "fn a() {}\nfn b() { 1 }\n");
        write(&work, "src/new.rs", "pub fn c() {}\n");
        fs::remove_file(work.join("run.sh")).expect("rm");
        write(&work, "target/ignored", "x");
        let after = snapshot(&work, &exclude()).expect("snapshot");
        let change = diff(&base, &after);
        assert_eq!(change.files, ["run.sh", "src/lib.rs", "src/new.rs"]);
        assert!(
            change
                .patch
                .contains("--- a/src/lib.rs\n+++ b/src/lib.rs\n"),
            "{}",
            change.patch
        );
        assert!(change.patch.contains("-fn b() {}\n+fn b() { 1 }\n"));
        assert!(change.patch.contains("--- /dev/null\n+++ b/src/new.rs\n"));
        assert!(change.patch.contains("deleted file mode 100755\n"));

        restore(&work, &after, &base).expect("restore");
        assert_eq!(snapshot(&work, &exclude()).expect("snapshot"), base);
        assert!(diff(&base, &base).is_empty());
    }

    #[test]
    fn apply_to_source_all_or_nothing() {
        let src = tempfile::tempdir().expect("tmp");
        write(src.path(), "a.txt", "one\n");
        write(src.path(), "b.txt", "two\n");
        let base = snapshot(src.path(), &exclude()).expect("snapshot");
        let mut done = base.clone();
        done.files.insert(
            "a.txt".into(),
            Entry::File {
                data: b"ONE\n".to_vec(),
                mode: 0o644,
            },
        );
        done.files.insert(
            "dir/c.txt".into(),
            Entry::File {
                data: b"three\n".to_vec(),
                mode: 0o644,
            },
        );
        done.files.remove("b.txt");
        let changed = apply_to_source(src.path(), &base, &done, &exclude()).expect("applies");
        assert_eq!(changed, ["a.txt", "b.txt", "dir/c.txt"]);
        assert_eq!(snapshot(src.path(), &exclude()).expect("snapshot"), done);

        // The source moved on meanwhile: nothing is written.
        write(src.path(), "a.txt", "edited by hand\n");
        let err = apply_to_source(src.path(), &base, &done, &exclude()).expect_err("conflict");
        assert!(err.to_string().contains("a.txt"), "{err}");
        assert_eq!(
            fs::read_to_string(src.path().join("a.txt")).expect("read"),
            "edited by hand\n"
        );
    }

    #[test]
    fn paths_stay_inside() {
        let root = tempfile::tempdir().expect("tmp");
        std::os::unix::fs::symlink("/tmp", root.path().join("link")).expect("link");
        assert!(inside(root.path(), "src/a.rs", &exclude()).is_ok());
        for bad in [
            "/etc/passwd",
            "../x",
            "src/../../x",
            "",
            "link/x",
            ".git/config",
            "target/a",
        ] {
            assert!(inside(root.path(), bad, &exclude()).is_err(), "{bad}");
        }
    }
}
