//! Invariants over generated cascades: any delivery order ends the same; no
//! stage is dispatched before its dependencies succeeded (checked by the
//! simulator at every dispatch); replaying any prefix of the event log and
//! re-delivering in-flight work converges to the same results.

use std::fmt::Write as _;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::json;

use super::{Later, Sim, check_dispatches, outcome, plan_of, result_of};
use crate::engine::{Effect, Engine, Event, Millis};
use crate::plan::Plan;

/// One generated stage: what it runs and which earlier stages it needs.
#[derive(Clone, Debug)]
struct Gen {
    kind: u8,
    deps: Vec<usize>,
}

const KINDS: u8 = 7;

fn dag() -> impl Strategy<Value = Vec<Gen>> {
    prop::collection::vec((0..KINDS, any::<u8>()), 1..=7).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (kind, mask))| Gen {
                kind,
                deps: (0..i).filter(|j| mask & (1 << j) != 0).collect(),
            })
            .collect()
    })
}

/// The cascade for a generated DAG. Echo stages read every echo dependency,
/// so outputs carry the data flow and any ordering mistake shows.
fn yaml(stages: &[Gen]) -> String {
    let mut y = String::from("name: gen\nstages:\n");
    for (i, g) in stages.iter().enumerate() {
        let deps: Vec<String> = g.deps.iter().map(|d| format!("s{d}")).collect();
        let _ = writeln!(
            y,
            "  - stage_id: s{i}\n    dependencies: [{}]",
            deps.join(", ")
        );
        let body = match g.kind {
            0 => {
                let mut inputs = format!("v: s{i}");
                for &d in g.deps.iter().filter(|&&d| stages[d].kind == 0) {
                    let _ = write!(inputs, ", from{d}: \"${{s{d}.v}}+{i}\"");
                }
                format!("skill: echo\n    inputs: {{{inputs}}}")
            }
            1 => "skill: noop".into(),
            2 => "type: parallel\n    skills: [echo, noop]\n    inputs: {v: p}".into(),
            3 => "type: parallel\n    skill: echo\n    for_each: [1, 2, 3]\n    inputs: {n: \"${item}\"}"
                .into(),
            4 => "skill: fail\n    inputs: {times: 1}\n    error_handling: {strategy: retry, backoff: {type: exponential, base: 100ms, jitter: true}}".into(),
            5 => "skill: sleep\n    inputs: {seconds: 1}".into(),
            _ => "skill: fail\n    error_handling: {continue_on_failure: true}".into(),
        };
        let _ = writeln!(y, "    {body}");
    }
    y
}

fn run(plan: &Arc<Plan>, seed: Option<u64>) -> Sim {
    let mut sim = Sim::new(plan.clone());
    sim.start(json!({}));
    match seed {
        Some(s) => sim.run_seeded(s),
        None => sim.run(),
    };
    assert!(sim.engine.is_finished(), "the run did not finish");
    sim
}

fn expected_status(stages: &[Gen]) -> &'static str {
    if stages.iter().any(|g| g.kind == 6) {
        "partial"
    } else {
        "success"
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (a) + (b): whatever order results arrive in, the run ends with the
    /// same statuses and outputs; the simulator checks every dispatch.
    #[test]
    fn any_delivery_order_ends_the_same(stages in dag(), seeds in prop::collection::vec(any::<u64>(), 3)) {
        let plan = plan_of(&yaml(&stages));
        let base = run(&plan, None);
        prop_assert_eq!(base.run_status(), expected_status(&stages));
        let want = outcome(&base.engine);
        for seed in seeds {
            let other = run(&plan, Some(seed));
            prop_assert_eq!(&outcome(&other.engine), &want, "seed {}", seed);
        }
    }
}

/// Applies `log` to a fresh engine, checking every dispatch; returns the
/// engine and the effects.
fn replay(plan: &Arc<Plan>, log: &[(Event, Millis)]) -> (Engine, Vec<(Millis, Effect)>) {
    let mut engine = Engine::new(plan.clone());
    let mut fx = Vec::new();
    for (e, t) in log {
        let out = engine.apply(e.clone(), *t);
        check_dispatches(&engine, &out);
        fx.extend(out.into_iter().map(|f| (*t, f)));
    }
    (engine, fx)
}

/// A driver recovering after `log[..k]`: the engine is rebuilt by replay,
/// pending timers come from the replayed effects, every in-flight attempt is
/// sent again, and the results the original run got after the cut arrive
/// too (duplicates of attempts already answered).
fn recover(plan: &Arc<Plan>, log: &[(Event, Millis)], k: usize) -> Sim {
    let (engine, fx) = replay(plan, &log[..k]);
    let mut sim = Sim::new(plan.clone());
    sim.now = log[..k].last().map_or(sim.now, |(_, t)| *t);
    sim.engine = engine;
    let mut fired: Vec<_> = log[..k]
        .iter()
        .filter_map(|(e, _)| match e {
            Event::TimerFired(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    for (_, e) in fx {
        if let Effect::StartTimer { timer, at } = e {
            match fired.iter().position(|f| *f == timer) {
                Some(i) => {
                    fired.remove(i);
                }
                None => sim.push_later(at.max(sim.now), Later::Timer(timer)),
            }
        }
    }
    for spec in sim.engine.in_flight() {
        let (took, result) = result_of(&spec);
        sim.push_later(sim.now + took, Later::Result(result));
    }
    for (e, _) in &log[k..] {
        if let Event::TaskFinished(r) = e {
            sim.ready.push(r.clone());
        }
    }
    sim
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// (c) Replay: cutting the log anywhere and applying the rest rebuilds
    /// the same report; recovering at the cut with redelivered in-flight
    /// attempts and duplicate results converges to the same outcome.
    #[test]
    fn replay_from_any_prefix_converges(stages in dag(), seed in any::<u64>()) {
        let plan = plan_of(&yaml(&stages));
        let original = run(&plan, Some(seed));
        let want_report = serde_json::to_value(original.engine.report()).expect("report serializes");
        let want = outcome(&original.engine);
        let log = &original.log;
        for k in 0..=log.len() {
            let (mut engine, _) = replay(&plan, &log[..k]);
            for (e, t) in &log[k..] {
                let out = engine.apply(e.clone(), *t);
                check_dispatches(&engine, &out);
            }
            let got = serde_json::to_value(engine.report()).expect("report serializes");
            prop_assert_eq!(&got, &want_report, "split at {}", k);

            if k == 0 {
                continue; // nothing to recover before the run started
            }
            let mut rec = recover(&plan, log, k);
            rec.run_seeded(seed ^ k as u64);
            prop_assert!(rec.engine.is_finished(), "recovery at {} did not finish", k);
            prop_assert_eq!(&outcome(&rec.engine), &want, "recovered at {}", k);
        }
    }
}
