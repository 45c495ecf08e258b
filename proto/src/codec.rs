//! MessagePack with named fields: the only encoding used on the wire.
//!
//! Every wire message carries its protocol version `v`; a consumer reads it with
//! [`decode_current`], which refuses any version but [`PROTOCOL_VERSION`] (a
//! message of another version may mean something else with the same fields).

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::PROTOCOL_VERSION;
use crate::events::EventRecord;
use crate::wire::{
    BatchMessage, BatchReport, CancelRequest, Claim, DeadLetter, Lease, ResultRecord, RunRecord,
    Submission, TaskMessage, WorkerInfo,
};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("cannot encode message: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("cannot decode message: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("{kind} of protocol version {got}: this build speaks version {PROTOCOL_VERSION} only")]
    Version { kind: &'static str, got: u32 },
}

impl CodecError {
    /// Whether the message decoded but is of a protocol version this build refuses.
    pub fn is_version(&self) -> bool {
        matches!(self, CodecError::Version { .. })
    }
}

/// A wire message with a protocol version.
pub trait Versioned {
    /// What the message is, for errors ("submission").
    const KIND: &'static str;
    fn version(&self) -> u32;
}

macro_rules! versioned {
    ($($t:ty => $kind:literal),* $(,)?) => {$(
        impl Versioned for $t {
            const KIND: &'static str = $kind;
            fn version(&self) -> u32 {
                self.v
            }
        }
    )*};
}

versioned! {
    Submission => "submission",
    RunRecord => "run record",
    Lease => "lease",
    WorkerInfo => "worker record",
    TaskMessage => "task message",
    BatchMessage => "batch message",
    Claim => "claim",
    ResultRecord => "result",
    CancelRequest => "cancel request",
    BatchReport => "batch report",
    DeadLetter => "dead letter",
    EventRecord => "event log entry",
}

/// Decodes a wire message and refuses it unless it is of [`PROTOCOL_VERSION`]. A
/// message that does not decode but names another version is refused for its version
/// (a newer version may have changed its shape).
pub fn decode_current<T: DeserializeOwned + Versioned>(bytes: &[u8]) -> Result<T, CodecError> {
    #[derive(Deserialize)]
    struct VersionOnly {
        v: Option<u32>,
    }
    let version_error = |got| CodecError::Version { kind: T::KIND, got };
    match decode::<T>(bytes) {
        Ok(m) if m.version() == PROTOCOL_VERSION => Ok(m),
        Ok(m) => Err(version_error(m.version())),
        Err(e) => match decode::<VersionOnly>(bytes) {
            Ok(VersionOnly { v: Some(got) }) if got != PROTOCOL_VERSION => Err(version_error(got)),
            _ => Err(e),
        },
    }
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
    fn only_the_current_protocol_version_is_accepted() {
        let sub = |v: u32| Submission {
            v,
            run_id: "r".into(),
            idempotency_key: None,
            main: "c.yaml".into(),
            files: Default::default(),
            inputs: Default::default(),
            submitted_at: 0,
            submitted_by: String::new(),
        };
        let ok = encode(&sub(PROTOCOL_VERSION)).expect("encodes");
        assert_eq!(
            decode_current::<Submission>(&ok).expect("current").v,
            PROTOCOL_VERSION
        );
        let err = decode_current::<Submission>(&encode(&sub(99)).expect("encodes"))
            .expect_err("v 99 refused");
        assert!(err.is_version());
        assert_eq!(
            err.to_string(),
            format!(
                "submission of protocol version 99: this build speaks version {PROTOCOL_VERSION} only"
            )
        );
        // Another shape with another version: refused for its version.
        let other = encode(&json!({"v": 2, "something": "else"})).expect("encodes");
        assert!(
            decode_current::<Submission>(&other)
                .expect_err("refused")
                .is_version()
        );
        // Garbage stays a decode error.
        assert!(
            !decode_current::<Submission>(b"\xc1")
                .expect_err("garbage")
                .is_version()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode::<TaskSpec>(b"\xc1\xff\x00garbage").is_err());
        assert!(decode::<TaskSpec>(b"").is_err());
    }
}
