//! GitHub's blob encoding. A run's patch is split and applied with
//! `cascade_core::diff`.

/// Decodes base64 as GitHub sends blobs: standard alphabet with line
/// breaks; also URL-safe characters, missing padding and stray trailing
/// bits, as the hand-written decoder this replaced took them.
pub fn base64_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let compact: String = text
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    LENIENT.decode(compact)
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
        assert_eq!(base64_decode("YQ").expect("no padding"), b"a");
        assert_eq!(base64_decode("-_8=").expect("URL-safe"), [0xfb, 0xff]);
        assert_eq!(base64_decode("").expect("empty"), b"");
        assert!(base64_decode("a$b").is_err());
    }
}
