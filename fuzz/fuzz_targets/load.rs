//! The cascade loader (YAML and JSON, sub-cascades from a bundle), then the
//! planner and the plan's renderings on whatever loads.
//!
//! Input: UTF-8 text; `\0` separates files. The first is the main file, the
//! others are the bundle's `a.yaml`, `b.json`, `parts/c.yml`, `d` (what
//! `cascade: a` and so on resolve to). Half the inputs load as `main.json`.
#![no_main]

use std::collections::BTreeMap;

use cascade_core::plan::{self, Format, PlanOptions};
use cascade_core::spec;
use libfuzzer_sys::fuzz_target;

const SUB_FILES: [&str; 4] = ["a.yaml", "b.json", "parts/c.yml", "d"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\0');
    let main_text = parts.next().unwrap_or_default();
    let main = if data.len() % 2 == 0 {
        "main.yaml"
    } else {
        "main.json"
    };
    let mut files = BTreeMap::new();
    files.insert(main.to_owned(), main_text.to_owned());
    for (name, part) in SUB_FILES.iter().zip(parts) {
        files.insert((*name).to_owned(), part.to_owned());
    }
    let loaded = spec::load_bundle(main, &files);
    let _ = loaded.render_diagnostics();
    let Some(cascade) = loaded.cascade else {
        return;
    };
    let plan = plan::compile(&cascade, &PlanOptions::default());
    for d in &plan.diagnostics {
        let _ = d.render(None);
    }
    for format in [Format::Text, Format::Json, Format::Mermaid, Format::Dot] {
        let _ = plan::render(&plan, format);
    }
});
