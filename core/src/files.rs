//! Reading small user files with serde-saphyr (skill files, the models file):
//! the parser limits and the sanitising of text quoted back in errors.

use serde_saphyr::{Budget, Options};

/// Parser limits far above any real skill or models file, far below anything
/// that hurts: depth, events, nodes, aliases and scalar bytes are bounded, so a
/// hostile file is refused before it costs memory. `max_bytes` is the file's
/// own size cap.
pub fn small_file_options(max_bytes: u64) -> Options {
    let max_bytes = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    let mut budget = Budget::default();
    budget.max_depth = 32;
    budget.flow_nesting_limit = 32;
    budget.max_events = 100_000;
    budget.max_nodes = 50_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_documents = 1;
    budget.max_total_scalar_bytes = max_bytes;
    budget.max_recorded_anchor_events = 100_000;
    budget.max_recorded_anchor_bytes = max_bytes;
    budget.max_inclusion_depth = 0;
    let mut options = Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = 100_000;
    options.alias_limits.max_replay_stack_depth = 16;
    options.with_snippet = false;
    options
}

/// Control characters from a file must not reach a terminal verbatim.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
