//! Normalisation of the cascade-wide and per-stage settings: error
//! handling (both shapes), durations, swarm_config, memory, deferred sections.

use serde_json::json;

use super::{errors, fails, load, ok, stage};
use crate::spec::*;

// ---- error handling --------------------------------------------------------

#[test]
fn error_handling_as_a_mapping() {
    let c = ok("name: n
error_handling: {strategy: fail}
stages:
  - stage: a
    skill: echo
    error_handling:
      strategy: retry
      max_retries: 5
      backoff: linear
      base_delay: 250ms
      max_delay: 10s
      jitter: false
      fallback: echo
      escalate_after: 2
      escalation: {type: human-review, notify: team@example.com}
      continue_on_failure: true
  - stage: b
    skill: echo
    error_handling:
      strategy: codex-auto-fix
      backoff: {type: exponential, base: 1s, max: 1m}
  - stage: c
    skill: echo
    error_handling: {strategy: codex-auto-fix, max_iterations: 7}
");
    assert_eq!(
        c.error_handling.as_ref().map(|e| e.strategy),
        Some(ErrorStrategy::Fail)
    );
    let a = stage(&c, "a").error_handling.as_ref().expect("set");
    assert_eq!(a.strategy, ErrorStrategy::Retry);
    assert_eq!(a.max_retries, 5);
    assert_eq!(
        a.backoff,
        Backoff {
            kind: BackoffKind::Linear,
            base_ms: 250,
            max_ms: 10_000,
            jitter: false
        }
    );
    assert_eq!(a.fallback.as_deref(), Some("echo"));
    assert_eq!(a.escalate_after, Some(2));
    assert_eq!(
        a.escalation.as_ref().map(|e| e["type"].clone()),
        Some(json!("human-review"))
    );
    assert_eq!(a.continue_on_failure, Some(true));
    let b = stage(&c, "b").error_handling.as_ref().expect("set");
    assert_eq!(b.strategy, ErrorStrategy::CodexAutoFix);
    assert_eq!(
        b.max_retries, 3,
        "a retrying strategy defaults to 3 retries"
    );
    assert_eq!((b.backoff.base_ms, b.backoff.max_ms), (1000, 60_000));
    let cc = stage(&c, "c").error_handling.as_ref().expect("set");
    assert_eq!(
        cc.max_retries, 7,
        "max_iterations bounds codex-auto-fix retries"
    );
}

#[test]
fn error_handling_as_the_seeds_list_of_names() {
    let l = load(
        "name: n
stages:
  - stage: a
    skill: echo
    error_handling:
      - retry_with_backoff
      - fallback_to_alternative
      - codex_auto_fix
      - model_switching
      - swarm_recovery
",
    );
    assert!(errors(&l).is_empty(), "{:?}", errors(&l));
    let c = l.cascade.as_ref().expect("cascade");
    let eh = stage(c, "a").error_handling.as_ref().expect("set");
    assert_eq!(
        eh.strategy,
        ErrorStrategy::Retry,
        "the first strategy applies"
    );
    assert_eq!(eh.max_retries, 3);
    let warnings: Vec<String> = l.diagnostics.iter().map(ToString::to_string).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("`fallback_to_alternative` names no skill")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("`codex_auto_fix` is not used")),
        "{warnings:?}"
    );
    for alias in [
        "codex_auto_fix",
        "model_switching",
        "swarm_recovery",
        "retry_with_backoff",
    ] {
        assert!(ErrorStrategy::parse(alias).is_some(), "{alias}");
    }
    fails(
        "name: n\nstages: [{stage: a, skill: echo, error_handling: [retyr]}]\n",
        "unknown strategy `retyr`, did you mean `retry`?",
    );
}

// ---- durations, swarm, memory ---------------------------------------------

#[test]
fn durations_in_every_place_they_are_accepted() {
    let c = ok("name: n
timeout: 1h30m
memory: {retention: 7d}
stages:
  - {stage: a, skill: echo, timeout: 30s, task_timeout: 500ms}
  - {stage: b, skill: echo, timeout: 90}
");
    assert_eq!(c.timeout.map(|d| d.as_secs()), Some(5400));
    assert_eq!(c.memory.retention.map(|d| d.as_secs()), Some(7 * 86400));
    assert_eq!(stage(&c, "a").timeout.map(|d| d.as_secs()), Some(30));
    assert_eq!(
        stage(&c, "a").task_timeout.map(|d| d.as_millis()),
        Some(500)
    );
    assert_eq!(
        stage(&c, "b").timeout.map(|d| d.as_secs()),
        Some(90),
        "a bare number is seconds"
    );
    fails("name: n\ntimeout: 5x\nstages: []\n", "unknown unit `x`");
    fails(
        "name: n\ntimeout: -5s\nstages: []\n",
        "must not be negative",
    );
}

#[test]
fn swarm_config() {
    let c = ok("name: n
stages:
  - stage: a
    type: swarm-parallel
    skills: [x, y]
    swarm_config: {topology: hierarchical, max_agents: 4, strategy: specialized, memory_shared: true}
  - stage: b
    type: swarm-parallel
    skills: [x]
    swarm_config: {max_agents: auto}
");
    let a = stage(&c, "a").swarm.as_ref().expect("swarm");
    assert_eq!(a.topology, Topology::Hierarchical);
    assert_eq!(a.max_agents, Some(4));
    assert_eq!(a.strategy, Strategy::Specialized);
    assert_eq!(a.memory_shared, Some(true));
    let b = stage(&c, "b").swarm.as_ref().expect("swarm");
    assert_eq!(
        (b.topology, b.max_agents, b.strategy),
        (Topology::Mesh, None, Strategy::Balanced)
    );
    fails(
        "name: n\nstages: [{stage: a, skill: x, swarm_config: {topology: ring}}]\n",
        "unknown value `ring` (expected one of: mesh, star, hierarchical)",
    );
    fails(
        "name: n\nstages: [{stage: a, skill: x, swarm_config: {max_agents: 0}}]\n",
        "0 is out of range (1 to 100000)",
    );
}

#[test]
fn the_memory_section_and_stage_memory() {
    let l = load(
        "name: n
memory:
  persistence: enabled
  scope: global
  retention: 1d
  keys: [analysis, patterns]
  cleanup_between_stages: true
  cleanup_on_exit: true
  max_memory_mb: 500
  storage: mcp__ruv-swarm__memory
stages:
  - stage: a
    skill: echo
    memory: persistent
  - stage: b
    skill: echo
    memory: {read_keys: [analysis], write_keys: [patterns]}
    memory_shared: false
",
    );
    assert!(errors(&l).is_empty(), "{:?}", errors(&l));
    let storage_warned = l
        .diagnostics
        .iter()
        .any(|d| d.message.contains("`storage` is ignored"));
    assert!(storage_warned);
    let c = l.cascade.expect("cascade");
    let m = &c.memory;
    assert!(m.enabled && m.cleanup_between_stages && m.cleanup_on_exit);
    assert_eq!(m.scope, MemoryScope::Global);
    assert_eq!(m.keys, ["analysis", "patterns"]);
    assert_eq!(m.max_memory_mb, Some(500));
    assert!(stage(&c, "a").memory.persistent);
    let b = &stage(&c, "b").memory;
    assert_eq!(
        (b.read_keys.as_slice(), b.write_keys.as_slice()),
        (&["analysis".to_owned()][..], &["patterns".to_owned()][..])
    );
    assert_eq!(b.shared, Some(false));
    let off = ok("name: n\nmemory: {persistence: disabled}\nstages: []\n");
    assert!(!off.memory.enabled);
    let absent = ok("name: n\nstages: []\n");
    assert!(absent.memory.enabled, "memory is on unless turned off");
    assert_eq!(absent.memory.scope, MemoryScope::Cascade);
}

#[test]
fn deferred_sections_warn_and_are_kept() {
    let l = load(
        "name: n
monitoring: {metrics: true}
data_flow: {a: b}
stages: []
",
    );
    assert!(errors(&l).is_empty());
    let warned: Vec<&str> = l.diagnostics.iter().map(|d| d.field.as_str()).collect();
    assert_eq!(warned, ["monitoring", "data_flow"]);
    let c = l.cascade.expect("cascade");
    assert!(c.deferred.contains_key("monitoring"));
}
