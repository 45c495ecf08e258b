//! MessagePack with named fields: the only encoding used on the wire.

use serde::{Serialize, de::DeserializeOwned};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("cannot decode message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attempt, Failure, TaskOutcome, TaskResult, TaskSpec};
    use serde_json::json;

    #[test]
    fn task_round_trips_with_named_fields() {
        let task = TaskSpec {
            run_id: "r1".into(),
            task_id: "build#0".into(),
            stage_id: "build".into(),
            skill: "echo".into(),
            attempt: Attempt::FIRST,
            inputs: json!({"a": 1, "b": [true, null, "x"]}),
            timeout_ms: Some(1000),
            model: None,
            workdir: None,
            context: Some(json!({"inputs": {}})),
            budget: None,
            hooks: None,
        };
        let bytes = encode(&task).expect("encodes");
        assert_eq!(decode::<TaskSpec>(&bytes).expect("decodes"), task);
    }

    #[test]
    fn result_round_trips_both_outcomes() {
        for outcome in [
            TaskOutcome::Succeeded {
                outputs: json!({"n": 3}),
            },
            TaskOutcome::Failed(Failure::retryable("boom")),
        ] {
            let r = TaskResult {
                task_id: "t".into(),
                attempt: Attempt(2),
                worker: "w".into(),
                duration_ms: 5,
                outcome,
                usage: None,
                model: None,
                notes: Vec::new(),
            };
            assert_eq!(
                decode::<TaskResult>(&encode(&r).expect("encodes")).expect("decodes"),
                r
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<TaskSpec>(b"\xc1\xff\x00garbage").is_err());
        assert!(decode::<TaskSpec>(b"").is_err());
    }
}
