//! The one duration grammar of Cascade: cascade files, skill files, the models
//! file and every flag and environment variable of both binaries read durations
//! through [`parse_duration`] (or [`parse_nonzero_duration`] where zero means
//! nothing), so `1h30m`, `7d` and `500ms` mean the same everywhere.
//!
//! Grammar: a bare number of seconds (`30`, `1.5`), or one or more
//! `<number><unit>` parts (`500ms`, `30s`, `5m`, `1h30m`, `7d`, `2w`), spaces
//! allowed around parts; units `ms`, `s`/`sec`/`second(s)`, `m`/`min`/`minute(s)`,
//! `h`/`hr`/`hour(s)`, `d`/`day(s)`, `w`/`week(s)`. Between 0 and 10 years.

use std::time::Duration;

/// Why a duration was refused. The text names the input, so a caller only adds
/// where it came from (`file:line:col: field`, a flag or a variable).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration")]
    Empty,
    #[error("bad duration `{0}`: must not be negative")]
    Negative(String),
    #[error("bad duration `{text}`: expected a number before `{rest}`")]
    MissingNumber { text: String, rest: String },
    #[error("bad duration `{0}`")]
    BadNumber(String),
    #[error("bad duration `{0}`: missing unit (ms, s, m, h, d)")]
    MissingUnit(String),
    #[error("bad duration `{text}`: unknown unit `{unit}` (use ms, s, m, h, d)")]
    UnknownUnit { text: String, unit: String },
    #[error("bad duration `{0}`: must be between 0 and 10 years")]
    OutOfRange(String),
    #[error("bad duration `{0}`: must be greater than zero")]
    Zero(String),
}

/// A duration of zero or more.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(DurationError::Empty);
    }
    if t.starts_with('-') {
        return Err(DurationError::Negative(text.to_owned()));
    }
    if let Ok(secs) = t.parse::<f64>() {
        return seconds(secs, text);
    }
    let mut total = 0f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(DurationError::MissingNumber {
                text: text.to_owned(),
                rest: rest.to_owned(),
            });
        }
        let n: f64 = rest[..num_len]
            .parse()
            .map_err(|_| DurationError::BadNumber(text.to_owned()))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = rest[unit_len..].trim_start();
        let factor = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "week" | "weeks" => 604800.0,
            "" => return Err(DurationError::MissingUnit(text.to_owned())),
            other => {
                return Err(DurationError::UnknownUnit {
                    text: text.to_owned(),
                    unit: other.to_owned(),
                });
            }
        };
        total += n * factor;
    }
    seconds(total, text)
}

/// A duration greater than zero: timeouts, intervals, windows.
pub fn parse_nonzero_duration(text: &str) -> Result<Duration, DurationError> {
    let d = parse_duration(text)?;
    if d.is_zero() {
        return Err(DurationError::Zero(text.to_owned()));
    }
    Ok(d)
}

fn seconds(secs: f64, text: &str) -> Result<Duration, DurationError> {
    if !secs.is_finite() || !(0.0..=10.0 * 365.0 * 86400.0).contains(&secs) {
        return Err(DurationError::OutOfRange(text.to_owned()));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (text, ms) in [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h30m", 5_400_000),
            ("1h 30m", 5_400_000),
            ("7d", 604_800_000),
            ("1d", 86_400_000),
            ("2w", 1_209_600_000),
            ("2", 2000),
            ("1.5", 1500),
            ("1.5s", 1500),
            (" 2 s ", 2000),
            ("5 minutes", 300_000),
            ("0", 0),
        ] {
            assert_eq!(
                parse_duration(text).map(|d| d.as_millis()),
                Ok(ms),
                "{text}"
            );
        }
        for bad in [
            "", "s", "abc", "5x", "-1", "-1s", "1e400", "1e999h", "m5", "1..2s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nonzero() {
        assert!(matches!(
            parse_nonzero_duration("0ms"),
            Err(DurationError::Zero(_))
        ));
        assert!(parse_nonzero_duration("0").is_err());
        assert_eq!(
            parse_nonzero_duration("1h30m"),
            Ok(Duration::from_secs(5400))
        );
    }
}
