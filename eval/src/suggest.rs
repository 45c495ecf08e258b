//! Did-you-mean for every name a user can misspell: cascade fields, stage ids,
//! skills, models, skill-file and models-file fields.

/// The closest candidate to `word`, if it is close enough to be a likely typo:
/// within a third of the longer name's length in optimal string alignment
/// distance (Levenshtein plus adjacent transpositions, so `tset` is one edit
/// from `test`), ignoring case.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word_lower = word.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = strsim::osa_distance(&word_lower, &c.to_lowercase());
        let limit = (c.chars().count().max(word.chars().count()) / 3).max(1);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `, did you mean `x`?` or nothing.
pub fn suggestion<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(word, candidates)
        .map(|c| format!(", did you mean `{c}`?"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("dependecies", ["dependencies", "depends_on"]),
            Some("dependencies")
        );
        assert_eq!(did_you_mean("tset", ["test", "lint"]), Some("test"));
        assert_eq!(did_you_mean("rnu", ["run", "name"]), Some("run"));
        assert_eq!(did_you_mean("Timout", ["timeout"]), Some("timeout"));
        assert_eq!(did_you_mean("zzzzzz", ["test", "lint"]), None);
        assert_eq!(did_you_mean("environment", ["env", "run"]), None);
    }
}
