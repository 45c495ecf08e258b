//! One skill file parsed and validated from text (what the worker reads
//! from `--skills-dir`).
#![no_main]

use std::path::Path;

use cascade_exec::SkillDef;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match SkillDef::parse(Path::new("skills/fuzz.yaml"), text) {
        Ok(def) => {
            let _ = def.dir();
        }
        Err(errors) => {
            for e in errors {
                let _ = e.to_string();
            }
        }
    }
});
