//! Why an integration did not act. Integrations never fail a run: the error
//! is logged, noted in the results and recorded under the integration's key.

#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    #[error("no HTTP client could be started")]
    NoHttpClient,
    #[error("`{0}` is not set: nothing was sent to GitHub")]
    TokenUnset(String),
    #[error("no repository: give `repository` or set GITHUB_REPOSITORY")]
    NoRepository,
    #[error("repository `{0}` is not `owner/name`")]
    BadRepository(String),
    #[error("the run produced no patch (no codex-sandbox stage with a `patch`)")]
    NoPatch,
    #[error("`{0}` is not in the base branch: the patch was made against another tree")]
    NotInBase(String),
    #[error("blob {sha} is not base64: {source}")]
    BlobEncoding {
        sha: String,
        #[source]
        source: base64::DecodeError,
    },
    #[error("blob {0} is not UTF-8 text")]
    BlobText(String),
    #[error("`{0}` (the target's URL) is not set")]
    UrlUnset(String),
    #[error(transparent)]
    Diff(#[from] cascade_core::diff::DiffError),
    #[error(transparent)]
    Github(#[from] GithubError),
}

/// A GitHub API call that failed (after its retries).
#[derive(Debug, thiserror::Error)]
#[error("GitHub {method} {path}: {detail}")]
pub struct GithubError {
    pub method: String,
    pub path: String,
    pub status: Option<u16>,
    pub detail: String,
}
