//! The one wall-clock reading of Cascade: milliseconds since the Unix epoch,
//! as every process stamps records, leases and events. The engine never reads
//! it; drivers pass `now` in.

use cascade_proto::Millis;

/// Milliseconds since the Unix epoch; 0 for a clock set before 1970.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
