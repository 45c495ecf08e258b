//! Applying a fixer's proposal to the sandbox copy: full-file edits or a unified diff.
//!
//! Both are checked completely before anything is written (every path inside the copy,
//! every hunk applying), so a bad proposal leaves the copy as it was.

use std::fs;
use std::path::{Path, PathBuf};

use super::tree::{Exclude, TreeError, inside};

/// A full-file replacement proposed by a fixer.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileEdit {
    /// Relative to the project root.
    pub path: String,
    pub content: String,
}

/// What to do to one file.
enum Write {
    Put(PathBuf, String),
    Delete(PathBuf),
}

pub fn apply_edits(
    root: &Path,
    edits: &[FileEdit],
    exclude: &Exclude,
) -> Result<Vec<String>, TreeError> {
    let writes = edits
        .iter()
        .map(|e| {
            Ok(Write::Put(
                inside(root, &e.path, exclude)?,
                e.content.clone(),
            ))
        })
        .collect::<Result<Vec<_>, TreeError>>()?;
    perform(writes)?;
    Ok(edits.iter().map(|e| e.path.clone()).collect())
}

/// Applies a unified diff of one or more files (`a/` and `b/` prefixes optional).
pub fn apply_diff(root: &Path, diff: &str, exclude: &Exclude) -> Result<Vec<String>, TreeError> {
    let files = split_files(diff);
    if files.is_empty() {
        return Err(TreeError::NoFileHeaders);
    }
    let mut writes = Vec::new();
    let mut paths = Vec::new();
    for text in files {
        let patch = diffy::Patch::from_str(&text).map_err(TreeError::DiffSyntax)?;
        let old = patch.original().map(strip_prefix);
        let new = patch.modified().map(strip_prefix);
        let (path, deleting) = match (old.as_deref(), new.as_deref()) {
            (_, Some(n)) if n != "/dev/null" => (n.to_owned(), false),
            (Some(o), _) if o != "/dev/null" => (o.to_owned(), true),
            _ => return Err(TreeError::DiffNoPath),
        };
        let target = inside(root, &path, exclude)?;
        let creating = old.as_deref().is_none_or(|o| o == "/dev/null");
        let current = if creating {
            String::new()
        } else {
            fs::read_to_string(&target).map_err(|source| TreeError::ReadToPatch {
                path: path.clone(),
                source,
            })?
        };
        let result = diffy::apply(&current, &patch).map_err(|source| TreeError::DoesNotApply {
            path: path.clone(),
            source,
        })?;
        writes.push(if deleting {
            Write::Delete(target)
        } else {
            Write::Put(target, result)
        });
        paths.push(path);
    }
    perform(writes)?;
    Ok(paths)
}

fn perform(writes: Vec<Write>) -> Result<(), TreeError> {
    for w in writes {
        match w {
            Write::Put(path, content) => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(TreeError::io("create", parent))?;
                }
                fs::write(&path, content).map_err(TreeError::io("write", &path))?;
            }
            Write::Delete(path) => {
                fs::remove_file(&path).map_err(TreeError::io("remove", &path))?;
            }
        }
    }
    Ok(())
}

/// `a/src/x.rs` -> `src/x.rs`; a trailing tab and timestamp are dropped.
fn strip_prefix(name: &str) -> String {
    let name = name.split('\t').next().unwrap_or(name).trim();
    name.strip_prefix("a/")
        .or_else(|| name.strip_prefix("b/"))
        .unwrap_or(name)
        .to_owned()
}

/// Splits a multi-file diff into one text per file. Hunk line counts are followed, so a
/// removed line that starts with `-- ` is not taken for a header.
fn split_files(diff: &str) -> Vec<String> {
    let mut files: Vec<String> = Vec::new();
    let mut current = String::new();
    let (mut old_left, mut new_left) = (0usize, 0usize);
    let lines: Vec<&str> = diff.split_inclusive('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if old_left > 0 || new_left > 0 {
            match line.as_bytes().first() {
                Some(b'-') => old_left = old_left.saturating_sub(1),
                Some(b'+') => new_left = new_left.saturating_sub(1),
                Some(b'\\') => {}
                _ => {
                    old_left = old_left.saturating_sub(1);
                    new_left = new_left.saturating_sub(1);
                }
            }
            current.push_str(line);
            continue;
        }
        let starts_file = line.starts_with("diff ")
            || (line.starts_with("--- ")
                && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ "))
                && current.contains("@@"));
        if starts_file && current.contains("@@") {
            files.push(std::mem::take(&mut current));
        }
        if let Some((o, n)) = hunk_counts(line) {
            old_left = o;
            new_left = n;
        }
        // diffy rejects `diff --git` extended headers it does not know: keep only the
        // lines it reads.
        if line.starts_with("--- ")
            || line.starts_with("+++ ")
            || line.starts_with("@@")
            || current.contains("@@")
        {
            current.push_str(line);
        }
    }
    if current.contains("@@") {
        files.push(current);
    }
    files
}

/// `@@ -1,3 +1,4 @@` -> (3, 4); a missing count is 1.
fn hunk_counts(line: &str) -> Option<(usize, usize)> {
    let rest = line.strip_prefix("@@ -")?;
    let (old, rest) = rest.split_once(" +")?;
    let new = rest.split_once(" @@")?.0;
    let count = |r: &str| r.split_once(',').map_or(Some(1), |(_, n)| n.parse().ok());
    Some((count(old)?, count(new)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::tree::{diff, snapshot};

    fn exclude() -> Exclude {
        Exclude::new(&[".git".into()])
    }

    #[test]
    fn our_own_diffs_apply() {
        let a = tempfile::tempdir().expect("tmp");
        let b = tempfile::tempdir().expect("tmp");
        for root in [a.path(), b.path()] {
            fs::create_dir_all(root.join("src")).expect("mkdir");
            fs::write(
                root.join("src/lib.rs"),
                "-- a line starting with dashes\nkeep\nold\n",
            )
            .expect("write");
            fs::write(root.join("gone.txt"), "bye\n").expect("write");
        }
        fs::write(b.path().join("src/lib.rs"), "keep\nnew\n").expect("write");
        fs::write(b.path().join("added.txt"), "hello\nno newline").expect("write");
        fs::remove_file(b.path().join("gone.txt")).expect("rm");
        let ex = exclude();
        let change = diff(
            &snapshot(a.path(), &ex).expect("snap"),
            &snapshot(b.path(), &ex).expect("snap"),
        );
        let applied = apply_diff(a.path(), &change.patch, &ex).expect("applies");
        assert_eq!(applied, ["added.txt", "gone.txt", "src/lib.rs"]);
        assert_eq!(
            snapshot(a.path(), &ex).expect("snap"),
            snapshot(b.path(), &ex).expect("snap")
        );
    }

    #[test]
    fn bad_diffs_change_nothing() {
        let root = tempfile::tempdir().expect("tmp");
        fs::write(root.path().join("a.txt"), "one\ntwo\n").expect("write");
        let ex = exclude();
        let wrong_context = "--- a/a.txt\n+++ b/a.txt\n@@ -1,2 +1,2 @@\n one\n-three\n+four\n";
        assert!(apply_diff(root.path(), wrong_context, &ex).is_err());
        let escaping = "--- a/../x\n+++ b/../x\n@@ -0,0 +1 @@\n+x\n";
        assert!(
            apply_diff(root.path(), escaping, &ex)
                .expect_err("an error")
                .to_string()
                .contains("leaves")
        );
        // The first file would apply, the second does not: neither is written.
        let mixed = "--- a/a.txt\n+++ b/a.txt\n@@ -1,2 +1,2 @@\n-one\n+ONE\n two\n--- a/missing.txt\n+++ b/missing.txt\n@@ -1 +1 @@\n-x\n+y\n";
        assert!(apply_diff(root.path(), mixed, &ex).is_err());
        assert_eq!(
            fs::read_to_string(root.path().join("a.txt")).expect("read"),
            "one\ntwo\n"
        );
        assert!(apply_diff(root.path(), "just words", &ex).is_err());
    }

    #[test]
    fn edits() {
        let root = tempfile::tempdir().expect("tmp");
        let ex = exclude();
        let ok = [FileEdit {
            path: "dir/new.txt".into(),
            content: "x\n".into(),
        }];
        assert_eq!(
            apply_edits(root.path(), &ok, &ex).expect("applies"),
            ["dir/new.txt"]
        );
        assert_eq!(
            fs::read_to_string(root.path().join("dir/new.txt")).expect("read"),
            "x\n"
        );
        let bad = [
            FileEdit {
                path: "fine.txt".into(),
                content: "y".into(),
            },
            FileEdit {
                path: "/etc/x".into(),
                content: "y".into(),
            },
        ];
        assert!(apply_edits(root.path(), &bad, &ex).is_err());
        assert!(
            !root.path().join("fine.txt").exists(),
            "nothing written when one path is bad"
        );
    }
}
