//! In-memory stores (filled in next).
