//! Custom conditions: a jq script (bare filter or `jq '...'` command line)
//! compiled by jaq and run on a small context.
//!
//! Input: UTF-8 text, the script.
#![no_main]

use cascade_eval::JqFilter;
use libfuzzer_sys::fuzz_target;

include!("context.rs");

/// `JqFilter::evaluate` turns a panic inside jaq into an error (`catch_unwind`), as the
/// coordinator needs; libFuzzer's hook would abort on it all the same. A panic that
/// escapes the target still fails the run: libfuzzer-sys aborts on it.
fn quiet_caught_panics() {
    std::panic::set_hook(Box::new(|info| eprintln!("panic (caught or not): {info}")));
}

fuzz_target!(init: quiet_caught_panics(), |data: &[u8]| {
    let Ok(script) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(filter) = JqFilter::parse(script) {
        let _ = filter.evaluate(&context());
    }
});
