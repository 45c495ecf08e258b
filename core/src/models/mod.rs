//! The models file and the environment it is read against.
//!
//! - [`catalog`]: the models file ([`ModelCatalog`]: name -> [`ModelDef`], every problem
//!   at `file:line:col`), the built-in catalog, token estimates.
//! - [`ModelEnv`]: where API keys and `PATH` are read (the process, or a fixed map for
//!   tests and embedders).
//!
//! Pure data: the planner and the router price and route with it; `cascade_exec` calls
//! the models it describes.

mod catalog;

pub use catalog::{
    MAX_MODELS_FILE_BYTES, MODELS_ENV, ModelCatalog, ModelDef, ModelsFileError, Provider,
    RateLimit, estimate_tokens,
};

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Where a client reads API keys and `PATH`: the process environment, or a fixed map
/// (tests, embedders) that is also overlaid on the environment of CLI agents.
#[derive(Clone, Debug, Default)]
pub struct ModelEnv {
    fixed: Option<BTreeMap<String, String>>,
}

impl ModelEnv {
    /// The process environment.
    pub fn process() -> Self {
        ModelEnv { fixed: None }
    }

    /// Only the given variables (nothing is read from the process environment).
    pub fn fixed(vars: BTreeMap<String, String>) -> Self {
        ModelEnv { fixed: Some(vars) }
    }

    /// A variable's value; `None` when unset or not valid UTF-8.
    pub fn var(&self, name: &str) -> Option<String> {
        match &self.fixed {
            Some(vars) => vars.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
    }

    /// A variable's value when it is set and not blank.
    pub fn non_empty(&self, name: &str) -> Option<String> {
        self.var(name).filter(|v| !v.trim().is_empty())
    }

    /// Variables to add to a child's inherited environment.
    pub fn overlay(&self) -> impl Iterator<Item = (&String, &String)> {
        self.fixed.iter().flat_map(|m| m.iter())
    }

    fn path_var(&self) -> Option<OsString> {
        match &self.fixed {
            Some(vars) => vars.get("PATH").map(OsString::from),
            None => std::env::var_os("PATH"),
        }
    }

    /// Resolves a program the way a shell would: a name with a `/` is taken as a path,
    /// anything else is searched on `PATH`. Only executable regular files count.
    pub fn find_program(&self, program: &str) -> Option<PathBuf> {
        if program.is_empty() {
            return None;
        }
        if program.contains('/') {
            let p = Path::new(program);
            return is_executable(p).then(|| p.to_owned());
        }
        let path = self.path_var()?;
        std::env::split_paths(&path)
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable(candidate))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
