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
    let files = cascade_core::diff::split(diff)?;
    let mut writes = Vec::new();
    let mut paths = Vec::new();
    for file in files {
        let path = file.path().to_owned();
        let target = inside(root, &path, exclude)?;
        let current = if file.is_new() {
            String::new()
        } else {
            fs::read_to_string(&target).map_err(|source| TreeError::ReadToPatch {
                path: path.clone(),
                source,
            })?
        };
        let result = file.apply(&current)?;
        writes.push(if file.is_deleted() {
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
