//! How a process talks to the re-exec helper (`helper`, `supervise`): the
//! argument that turns a binary into it, and how it says it could not set a
//! command up. Its own module so both modes depend on it, not on each other.

/// `argv[1]` that turns a binary into the helper.
pub const HELPER_MARKER: &str = "__cascade-sandbox-exec";
/// The first words of the helper's error line on stderr.
pub const HELPER_ERROR_PREFIX: &str = "cascade-sandbox-helper:";
/// The helper's exit code when it could not set the sandbox up.
pub const HELPER_ERROR_CODE: i32 = 125;
