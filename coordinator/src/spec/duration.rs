//! Durations as written in cascade files: `500ms`, `30s`, `5m`, `1h`, `7d`,
//! `1h30m`, or a bare number of seconds.

use std::time::Duration;

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t.starts_with('-') {
        return Err(format!("bad duration `{text}`: must not be negative"));
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
            return Err(format!(
                "bad duration `{text}`: expected a number before `{rest}`"
            ));
        }
        let n: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("bad duration `{text}`"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let factor = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
            "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            "w" | "week" | "weeks" => 604800.0,
            "" => {
                return Err(format!(
                    "bad duration `{text}`: missing unit (ms, s, m, h, d)"
                ));
            }
            other => {
                return Err(format!(
                    "bad duration `{text}`: unknown unit `{other}` (use ms, s, m, h, d)"
                ));
            }
        };
        total += n * factor;
    }
    seconds(total, text)
}

fn seconds(secs: f64, text: &str) -> Result<Duration, String> {
    if !secs.is_finite() || !(0.0..=10.0 * 365.0 * 86400.0).contains(&secs) {
        return Err(format!(
            "bad duration `{text}`: must be between 0 and 10 years"
        ));
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
            ("7d", 604_800_000),
            ("2", 2000),
            ("1.5", 1500),
        ] {
            assert_eq!(
                parse_duration(text).map(|d| d.as_millis()),
                Ok(ms),
                "{text}"
            );
        }
        for bad in ["", "abc", "5x", "-1", "1e400", "m5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
