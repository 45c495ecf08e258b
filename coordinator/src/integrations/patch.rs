//! GitHub's blob encoding. A run's patch is split and applied with
//! `cascade_core::diff`.

/// Decodes standard base64 (GitHub's blob encoding: with line breaks).
pub fn base64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_github_sends_it() {
        assert_eq!(
            base64_decode("aGVsbG8g\nd29ybGQK\n").expect("decodes"),
            b"hello world\n"
        );
        assert_eq!(base64_decode("YQ==").expect("decodes"), b"a");
        assert_eq!(base64_decode("").expect("empty"), b"");
        assert!(base64_decode("a$b").is_err());
    }
}
