//! The models file (YAML or JSON) parsed from text, then the catalog's
//! queries over every model it holds.
#![no_main]

use std::path::Path;

use cascade_core::models::{ModelCatalog, ModelEnv, estimate_tokens};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = estimate_tokens(text);
    let Ok(catalog) = ModelCatalog::parse(text, Path::new("models.yaml")) else {
        return;
    };
    let env = ModelEnv::fixed(Default::default());
    let _ = catalog.available_in(&env);
    let _ = catalog.names_list();
    let names: Vec<String> = catalog.names().map(str::to_owned).collect();
    for name in &names {
        let _ = catalog.fallback_chain(name);
        let _ = catalog.larger_context_than(name, 1000);
        if let Some(m) = catalog.get(name) {
            let _ = m.cost(1_000_000, u64::MAX);
            let _ = m.unavailable_reason(&env);
            let _ = m.endpoint();
            let _ = m.program();
        }
    }
});
