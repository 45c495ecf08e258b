//! Small text helpers the command line and the dashboard share.

/// `submitted_at`-style milliseconds as "12s ago" / "3m ago" / ...
pub fn age(at_ms: u64, now: u64) -> String {
    let s = now.saturating_sub(at_ms) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}
