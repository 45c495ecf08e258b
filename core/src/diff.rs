//! Unified diffs, as the codex-sandbox loop writes them and fixers propose
//! them: split into files (hunk line counts followed, so a removed line
//! starting with `-- ` is never taken for a header) and applied in memory.
//! The sandbox applies a fixer's diff to its copy with it; the GitHub
//! integration applies a run's patch to the base branch's contents. Pure.

/// Why a diff was refused.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("the patch changes binary files, which cannot be applied as text")]
    Binary,
    #[error("the patch names no file (no `---`/`+++` headers)")]
    NoFiles,
    #[error("a file in the patch names no path")]
    NoPath,
    #[error("a hunk comes before any `---`/`+++` file header")]
    HunkBeforeHeader,
    #[error("unreadable hunk header `{0}`")]
    HunkHeader(String),
    #[error("`{0}`: a hunk has more lines than its `@@` header counts")]
    HunkLength(String),
    #[error("`{path}`: cannot read the diff: {source}")]
    Syntax {
        path: String,
        #[source]
        source: diffy::ParsePatchError,
    },
    #[error("`{path}`: the patch does not apply: {source}")]
    DoesNotApply {
        path: String,
        #[source]
        source: diffy::ApplyError,
    },
}

/// One file of a unified diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilePatch {
    /// `None` for a new file.
    pub old_path: Option<String>,
    /// `None` for a deleted file.
    pub new_path: Option<String>,
    /// `new file mode` / `new mode` from a git header (`100755`).
    pub new_mode: Option<String>,
    /// The `---`/`+++` lines and hunks, as diffy reads them.
    text: String,
}

impl FilePatch {
    /// The path the change is committed under.
    pub fn path(&self) -> &str {
        self.new_path
            .as_deref()
            .or(self.old_path.as_deref())
            .unwrap_or_default()
    }

    pub fn is_new(&self) -> bool {
        self.old_path.is_none()
    }

    pub fn is_deleted(&self) -> bool {
        self.new_path.is_none()
    }

    /// Applies this file's hunks to its current contents (`""` for a new file).
    pub fn apply(&self, original: &str) -> Result<String, DiffError> {
        let patch = diffy::Patch::from_str(&self.text).map_err(|source| DiffError::Syntax {
            path: self.path().to_owned(),
            source,
        })?;
        diffy::apply(original, &patch).map_err(|source| DiffError::DoesNotApply {
            path: self.path().to_owned(),
            source,
        })
    }
}

/// Splits a unified diff into files. Hunk line counts are followed, so a
/// removed line starting with `-- ` is never taken for a header.
pub fn split(diff: &str) -> Result<Vec<FilePatch>, DiffError> {
    let mut files: Vec<FilePatch> = Vec::new();
    let mut current: Option<FilePatch> = None;
    let mut mode: Option<String> = None;
    let (mut old_left, mut new_left) = (0usize, 0usize);
    // Right after a hunk's last counted line: a further `+`, `-` or context
    // line means the header's counts are short (a hand- or model-written
    // diff), and applying the counted part alone would be a partial change.
    let mut hunk_just_ended = false;
    let lines: Vec<&str> = diff.split_inclusive('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
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
            if let Some(c) = current.as_mut() {
                c.text.push_str(line);
            }
            hunk_just_ended = old_left == 0 && new_left == 0;
            i += 1;
            continue;
        }
        let is_header =
            line.starts_with("--- ") && lines.get(i + 1).is_some_and(|n| n.starts_with("+++ "));
        if hunk_just_ended
            && !is_header
            && matches!(line.as_bytes().first(), Some(b'+' | b'-' | b' '))
        {
            let path = current
                .as_ref()
                .map(|c| c.path().to_owned())
                .unwrap_or_default();
            return Err(DiffError::HunkLength(path));
        }
        hunk_just_ended = hunk_just_ended && line.starts_with('\\');
        if line.starts_with("GIT binary patch") || line.starts_with("Binary files ") {
            return Err(DiffError::Binary);
        }
        if line.starts_with('\\') {
            // `\ No newline at end of file` after a hunk's last line.
            if let Some(c) = current.as_mut() {
                c.text.push_str(line);
            }
        } else if line.starts_with("diff ") {
            files.extend(current.take());
            mode = None;
        } else if let Some(m) = line
            .strip_prefix("new file mode ")
            .or_else(|| line.strip_prefix("new mode "))
        {
            mode = Some(m.trim().to_owned());
        } else if is_header {
            files.extend(current.take());
            let old = path_of(&line[4..]);
            let new = path_of(&lines[i + 1][4..]);
            current = Some(FilePatch {
                old_path: old,
                new_path: new,
                new_mode: mode.take(),
                text: format!("{line}{}", lines[i + 1]),
            });
            i += 2;
            continue;
        } else if line.starts_with("@@") {
            let (o, n) = hunk_counts(line)
                .ok_or_else(|| DiffError::HunkHeader(line.trim_end().to_owned()))?;
            old_left = o;
            new_left = n;
            match current.as_mut() {
                Some(c) => c.text.push_str(line),
                None => return Err(DiffError::HunkBeforeHeader),
            }
        }
        i += 1;
    }
    files.extend(current);
    if files.is_empty() {
        return Err(DiffError::NoFiles);
    }
    for f in &files {
        if f.old_path.is_none() && f.new_path.is_none() {
            return Err(DiffError::NoPath);
        }
    }
    Ok(files)
}

/// `a/src/x.rs` -> `src/x.rs`; `/dev/null` -> none; a trailing tab and
/// timestamp are dropped.
fn path_of(header: &str) -> Option<String> {
    let name = header.split('\t').next().unwrap_or(header).trim();
    if name == "/dev/null" {
        return None;
    }
    let name = name
        .strip_prefix("a/")
        .or_else(|| name.strip_prefix("b/"))
        .unwrap_or(name);
    Some(name.to_owned())
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

    const TWO_FILES: &str = "diff --git a/invoice/totals.py b/invoice/totals.py
--- a/invoice/totals.py
+++ b/invoice/totals.py
@@ -1,3 +1,3 @@
 def f():
--- a line that looks like a header
+    return 2
 # end
diff --git a/run.sh b/run.sh
new file mode 100755
--- /dev/null
+++ b/run.sh
@@ -0,0 +1,2 @@
+#!/bin/sh
+echo hi
diff --git a/gone.txt b/gone.txt
deleted file mode 100644
--- a/gone.txt
+++ /dev/null
@@ -1 +0,0 @@
-bye
";

    #[test]
    fn splits_follow_hunk_counts_and_modes() {
        let files = split(TWO_FILES).expect("splits");
        let shape: Vec<(Option<&str>, Option<&str>, Option<&str>)> = files
            .iter()
            .map(|f| {
                (
                    f.old_path.as_deref(),
                    f.new_path.as_deref(),
                    f.new_mode.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                (Some("invoice/totals.py"), Some("invoice/totals.py"), None),
                (None, Some("run.sh"), Some("100755")),
                (Some("gone.txt"), None, None),
            ]
        );
        let base = "def f():\n-- a line that looks like a header\n# end\n";
        assert_eq!(
            files[0].apply(base).expect("applies"),
            "def f():\n    return 2\n# end\n"
        );
        assert_eq!(files[1].apply("").expect("new"), "#!/bin/sh\necho hi\n");
        assert!(files[2].is_deleted() && files[1].is_new());
        let err = files[0]
            .apply("something else\n")
            .expect_err("does not apply");
        assert!(err.to_string().contains("does not apply"), "{err}");
    }

    #[test]
    fn a_hunk_longer_than_its_header_is_refused() {
        let short = "--- a/x\n+++ b/x\n@@ -1,1 +1,1 @@\n-a\n+b\n+c\n";
        assert!(matches!(split(short), Err(DiffError::HunkLength(p)) if p == "x"));
        // Prose after a blank line is not part of the diff.
        let prose = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n\n- changed a to b\n";
        assert_eq!(split(prose).expect("splits").len(), 1);
        // The no-newline marker, then the next file's header.
        let two = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n\\ No newline at end of file\n--- a/y\n+++ b/y\n@@ -1 +1 @@\n-c\n+d\n";
        assert_eq!(split(two).expect("splits").len(), 2);
    }

    #[test]
    fn binary_markers_count_only_as_lines_of_their_own() {
        let text = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-GIT binary patch\n+Binary files differ\n";
        assert_eq!(split(text).expect("a text change").len(), 1);
    }

    #[test]
    fn refuses_what_it_cannot_carry() {
        assert!(split("").is_err());
        assert!(split("@@ -1 +1 @@\n-a\n+b\n").is_err());
        let bin = "diff --git a/x.png b/x.png\nGIT binary patch\nliteral 3\n";
        assert!(matches!(split(bin), Err(DiffError::Binary)));
    }
}
