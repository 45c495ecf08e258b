//! Newtype ids: a stage id is never confused with a task id or a skill name.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// One execution of a cascade (a UUID v7 string, time-ordered).
    RunId
);
string_id!(
    /// A stage's id as written in the cascade (`stage_id`, `stage` or `skill_id`).
    StageId
);
string_id!(
    /// One unit of work inside a stage: `stage[#index]`, unique within a run.
    TaskId
);
string_id!(
    /// The name of a skill: a built-in or a file in a skills directory.
    SkillName
);

/// The attempt number of a task, starting at 1. Every dispatch of a task
/// (first try, retry, fallback, redelivery) has its own attempt number; a
/// result carrying a stale attempt is discarded (fencing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attempt(pub u32);

impl Attempt {
    pub const FIRST: Attempt = Attempt(1);

    pub fn next(self) -> Attempt {
        Attempt(self.0.saturating_add(1))
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
