//! Values larger than a NATS message travel by reference: outputs, inputs,
//! the run's event log and its report, all through the object store.

use cascade_tests::{TestSwarm, write_tree};
use serde_json::Value;

#[test]
fn outputs_and_inputs_larger_than_a_message_flow_between_stages() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(
        dir.path(),
        &[
            (
                "skills/big.yaml",
                "run: |\n  python3 -c 'import json; print(json.dumps({\"data\": \"x\" * 700000}))'\n",
            ),
            (
                "skills/measure.yaml",
                "run: |\n  python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps({\"length\": len(d[\"data\"])}))'\n",
            ),
            (
                "c.yaml",
                "name: big\nstages:\n  - stage: make\n    skill: big\n  - stage: copy\n    skill: echo\n    inputs: {data: \"${make.data}\"}\n  - stage: size\n    skill: measure\n    inputs: {data: \"${copy.data}\"}\n",
            ),
        ],
    );
    let skills_dir = dir.path().join("skills").display().to_string();
    let mut swarm = TestSwarm::new();
    swarm.start_coordinator("c1");
    swarm.start_worker("w1", "big,measure,echo", &["--skills-dir", &skills_dir]);
    let out = dir.path().join("r.json");
    let (code, _, stderr) = swarm.submit_wait(&dir.path().join("c.yaml"), &out, &[]);
    assert_eq!(code, 0, "{stderr}");
    let r: Value = serde_json::from_slice(&std::fs::read(&out).expect("results")).expect("json");
    assert_eq!(r["stages"]["size"]["output"]["length"], 700_000);
    assert_eq!(
        r["stages"]["copy"]["output"]["data"].as_str().map(str::len),
        Some(700_000)
    );
}
