//! GitHub over its REST API (github.com or Enterprise: the API root is a
//! setting): a pull request carrying a run's patch, an issue for a failed
//! run, a commit status.
//!
//! ```text
//!  pull request:  GET  /repos/{o}/{r}                      default branch (when no `base`)
//!                 GET  /repos/{o}/{r}/git/ref/heads/{base}  base commit
//!                 GET  /repos/{o}/{r}/git/commits/{sha}     its tree
//!                 GET  /repos/{o}/{r}/git/trees/{sha}       down to each patched file (mode, blob)
//!                 GET  /repos/{o}/{r}/git/blobs/{sha}       its contents; the patch is applied here
//!                 POST /repos/{o}/{r}/git/blobs | trees | commits | refs
//!                 POST /repos/{o}/{r}/pulls                 then POST .../issues/{n}/labels
//!  issue:         GET  /repos/{o}/{r}/issues?state=open&labels=..  the open one with this cascade's marker
//!                 POST .../issues/{n}/comments  or  POST .../issues
//!  status:        POST /repos/{o}/{r}/statuses/{sha}
//! ```
//! Every request carries `Authorization: Bearer <token>`, `Accept:
//! application/vnd.github+json` and `X-GitHub-Api-Version`. The token is
//! read from the environment by the caller and appears in no message, log
//! or `Debug` output. Re-running a flow is safe: the branch is named after
//! the run (an existing one with its pull request is reused), and a failure
//! comments on the open issue instead of opening another.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

pub use super::error::GithubError;
use super::error::IntegrationError;
use super::patch::base64_decode;
use cascade_core::diff::FilePatch;

pub const ACCEPT: &str = "application/vnd.github+json";
pub const API_VERSION: &str = "2022-11-28";
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// Each request's limit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of a request that is safe to repeat (reads, content-addressed
/// writes, statuses) on a transport error or a 5xx.
const ATTEMPTS: u32 = 3;
/// An error body is quoted up to this many characters.
const MAX_DETAIL: usize = 300;
/// The most open issues looked through for this cascade's marker.
const ISSUES_PAGE: u32 = 100;

/// A repository on a GitHub API, with a token.
#[derive(Clone)]
pub struct GithubClient {
    http: reqwest::Client,
    api: String,
    token: String,
    owner: String,
    repo: String,
}

impl std::fmt::Debug for GithubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubClient")
            .field("api", &self.api)
            .field("repository", &self.repository())
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Percent-encodes what is not unreserved (`/` kept when `keep_slash`).
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for k in path {
        cur = cur.get(k)?;
    }
    cur.as_str()
}

/// What the API said was wrong: its `message` and any `errors[].message`.
fn detail(status: reqwest::StatusCode, body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let mut msg = parsed
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| body.trim().to_owned());
    if let Some(errs) = parsed
        .as_ref()
        .and_then(|v| v.get("errors"))
        .and_then(Value::as_array)
    {
        let extra: Vec<String> = errs
            .iter()
            .filter_map(|e| e.get("message").and_then(Value::as_str).map(str::to_owned))
            .collect();
        if !extra.is_empty() {
            msg = format!("{msg} ({})", extra.join("; "));
        }
    }
    let msg: String = msg.chars().take(MAX_DETAIL).collect();
    format!("{status}: {msg}")
}

impl GithubClient {
    /// `repository` is `owner/name`; `api_url` the REST root.
    pub fn new(
        http: reqwest::Client,
        api_url: &str,
        token: String,
        repository: &str,
    ) -> Result<Self, IntegrationError> {
        let mut parts = repository.split('/').filter(|p| !p.is_empty());
        let (Some(owner), Some(repo), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(IntegrationError::BadRepository(repository.to_owned()));
        };
        Ok(GithubClient {
            http,
            api: api_url.trim_end_matches('/').to_owned(),
            token,
            owner: owner.to_owned(),
            repo: repo.to_owned(),
        })
    }

    /// [`GithubClient::new`] with a client of its own.
    pub fn connect(
        api_url: &str,
        token: String,
        repository: &str,
    ) -> Result<Self, IntegrationError> {
        let http = super::http_client().ok_or(IntegrationError::NoHttpClient)?;
        Self::new(http, api_url, token, repository)
    }

    pub fn repository(&self) -> String {
        format!("{}/{}", self.owner, self.repo)
    }

    fn repo_path(&self, rest: &str) -> String {
        format!(
            "/repos/{}/{}{rest}",
            encode(&self.owner, false),
            encode(&self.repo, false)
        )
    }

    /// One request; a `repeatable` one is tried again on a transport error
    /// or a 5xx.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        repeatable: bool,
    ) -> Result<Value, GithubError> {
        let err = |status: Option<u16>, detail: String| GithubError {
            method: method.to_string(),
            path: path.split('?').next().unwrap_or(path).to_owned(),
            status,
            detail,
        };
        let attempts = if repeatable { ATTEMPTS } else { 1 };
        let mut pause = Duration::from_millis(500);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.api))
                .timeout(REQUEST_TIMEOUT)
                .bearer_auth(&self.token)
                .header("Accept", ACCEPT)
                .header("X-GitHub-Api-Version", API_VERSION);
            if let Some(b) = body {
                req = req.json(b);
            }
            let (retry, failure) = match req.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    if status.is_success() {
                        return Ok(serde_json::from_str(&text).unwrap_or(Value::Null));
                    }
                    (
                        status.is_server_error(),
                        err(Some(status.as_u16()), detail(status, &text)),
                    )
                }
                // reqwest's text can hold the URL, never the token; say what happened.
                Err(e) if e.is_timeout() => (true, err(None, "no answer in time".into())),
                Err(e) if e.is_connect() => (true, err(None, "cannot connect".into())),
                Err(_) => (true, err(None, "the request failed".into())),
            };
            if !retry || attempt >= attempts {
                return Err(failure);
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }

    pub async fn default_branch(&self) -> Result<String, GithubError> {
        let v = self
            .call(Method::GET, &self.repo_path(""), None, true)
            .await?;
        Ok(str_at(&v, &["default_branch"]).unwrap_or("main").to_owned())
    }

    /// The commit a branch points at.
    pub async fn branch_head(&self, branch: &str) -> Result<String, GithubError> {
        let path = self.repo_path(&format!("/git/ref/heads/{}", encode(branch, true)));
        let v = self.call(Method::GET, &path, None, true).await?;
        Ok(str_at(&v, &["object", "sha"])
            .unwrap_or_default()
            .to_owned())
    }

    pub async fn commit_tree(&self, commit: &str) -> Result<String, GithubError> {
        let path = self.repo_path(&format!("/git/commits/{}", encode(commit, false)));
        let v = self.call(Method::GET, &path, None, true).await?;
        Ok(str_at(&v, &["tree", "sha"]).unwrap_or_default().to_owned())
    }

    /// One tree's entries (not recursive): `(name, mode, type, sha)`.
    pub async fn tree(&self, sha: &str) -> Result<Vec<TreeEntry>, GithubError> {
        let path = self.repo_path(&format!("/git/trees/{}", encode(sha, false)));
        let v = self.call(Method::GET, &path, None, true).await?;
        Ok(v.get("tree")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|e| TreeEntry {
                        path: str_at(e, &["path"]).unwrap_or_default().to_owned(),
                        mode: str_at(e, &["mode"]).unwrap_or("100644").to_owned(),
                        kind: str_at(e, &["type"]).unwrap_or_default().to_owned(),
                        sha: str_at(e, &["sha"]).unwrap_or_default().to_owned(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// A blob's contents as text.
    pub async fn blob(&self, sha: &str) -> Result<String, IntegrationError> {
        let path = self.repo_path(&format!("/git/blobs/{}", encode(sha, false)));
        let v = self.call(Method::GET, &path, None, true).await?;
        let content = str_at(&v, &["content"]).unwrap_or_default();
        let bytes = match str_at(&v, &["encoding"]) {
            Some("utf-8") => content.as_bytes().to_vec(),
            _ => base64_decode(content).map_err(|source| IntegrationError::BlobEncoding {
                sha: sha.to_owned(),
                source,
            })?,
        };
        String::from_utf8(bytes).map_err(|_| IntegrationError::BlobText(sha.to_owned()))
    }

    pub async fn create_blob(&self, content: &str) -> Result<String, GithubError> {
        let body = json!({"content": content, "encoding": "utf-8"});
        let v = self
            .call(
                Method::POST,
                &self.repo_path("/git/blobs"),
                Some(&body),
                true,
            )
            .await?;
        Ok(str_at(&v, &["sha"]).unwrap_or_default().to_owned())
    }

    pub async fn create_tree(
        &self,
        base_tree: &str,
        entries: &[Value],
    ) -> Result<String, GithubError> {
        let body = json!({"base_tree": base_tree, "tree": entries});
        let v = self
            .call(
                Method::POST,
                &self.repo_path("/git/trees"),
                Some(&body),
                true,
            )
            .await?;
        Ok(str_at(&v, &["sha"]).unwrap_or_default().to_owned())
    }

    pub async fn create_commit(
        &self,
        message: &str,
        tree: &str,
        parent: &str,
    ) -> Result<String, GithubError> {
        let body = json!({"message": message, "tree": tree, "parents": [parent]});
        let v = self
            .call(
                Method::POST,
                &self.repo_path("/git/commits"),
                Some(&body),
                true,
            )
            .await?;
        Ok(str_at(&v, &["sha"]).unwrap_or_default().to_owned())
    }

    /// Creates `refs/heads/{branch}`; `Ok(false)` when it exists already.
    pub async fn create_branch(&self, branch: &str, sha: &str) -> Result<bool, GithubError> {
        let body = json!({"ref": format!("refs/heads/{branch}"), "sha": sha});
        match self
            .call(
                Method::POST,
                &self.repo_path("/git/refs"),
                Some(&body),
                false,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.status == Some(422) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn force_branch(&self, branch: &str, sha: &str) -> Result<(), GithubError> {
        let path = self.repo_path(&format!("/git/refs/heads/{}", encode(branch, true)));
        let body = json!({"sha": sha, "force": true});
        self.call(Method::PATCH, &path, Some(&body), true).await?;
        Ok(())
    }

    /// A pull request (open or not) whose head is `branch` of this repository.
    pub async fn find_pull(&self, branch: &str) -> Result<Option<Issue>, GithubError> {
        let head = encode(&format!("{}:{branch}", self.owner), false);
        let path = self.repo_path(&format!("/pulls?head={head}&state=all"));
        let v = self.call(Method::GET, &path, None, true).await?;
        Ok(v.as_array().and_then(|a| a.first()).map(Issue::from_json))
    }

    pub async fn create_pull(
        &self,
        title: &str,
        head: &str,
        base: &str,
        body: &str,
        draft: bool,
    ) -> Result<Issue, GithubError> {
        let req = json!({"title": title, "head": head, "base": base, "body": body, "draft": draft});
        let v = self
            .call(Method::POST, &self.repo_path("/pulls"), Some(&req), false)
            .await?;
        Ok(Issue::from_json(&v))
    }

    /// Adds labels to an issue or a pull request.
    pub async fn add_labels(&self, number: u64, labels: &[String]) -> Result<(), GithubError> {
        let path = self.repo_path(&format!("/issues/{number}/labels"));
        self.call(Method::POST, &path, Some(&json!({"labels": labels})), true)
            .await?;
        Ok(())
    }

    /// The first open issue (not a pull request) with these labels whose
    /// body holds `marker`.
    pub async fn find_issue(
        &self,
        marker: &str,
        labels: &[String],
    ) -> Result<Option<Issue>, GithubError> {
        let mut query = format!("?state=open&per_page={ISSUES_PAGE}");
        if !labels.is_empty() {
            query.push_str(&format!("&labels={}", encode(&labels.join(","), false)));
        }
        let v = self
            .call(
                Method::GET,
                &self.repo_path(&format!("/issues{query}")),
                None,
                true,
            )
            .await?;
        Ok(v.as_array().and_then(|a| {
            a.iter()
                .filter(|i| i.get("pull_request").is_none())
                .find(|i| str_at(i, &["body"]).is_some_and(|b| b.contains(marker)))
                .map(Issue::from_json)
        }))
    }

    pub async fn create_issue(
        &self,
        title: &str,
        body: &str,
        labels: &[String],
    ) -> Result<Issue, GithubError> {
        let req = json!({"title": title, "body": body, "labels": labels});
        let v = self
            .call(Method::POST, &self.repo_path("/issues"), Some(&req), false)
            .await?;
        Ok(Issue::from_json(&v))
    }

    /// Comments on an issue; returns the comment's URL.
    pub async fn comment(&self, number: u64, body: &str) -> Result<String, GithubError> {
        let path = self.repo_path(&format!("/issues/{number}/comments"));
        let v = self
            .call(Method::POST, &path, Some(&json!({"body": body})), false)
            .await?;
        Ok(str_at(&v, &["html_url"]).unwrap_or_default().to_owned())
    }

    /// `state`: pending, success, failure or error. GitHub keeps 140
    /// characters of the description.
    pub async fn set_status(
        &self,
        sha: &str,
        state: &str,
        description: &str,
        context: &str,
    ) -> Result<(), GithubError> {
        let description: String = description.chars().take(140).collect();
        let path = self.repo_path(&format!("/statuses/{}", encode(sha, false)));
        let body = json!({"state": state, "description": description, "context": context});
        self.call(Method::POST, &path, Some(&body), true).await?;
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TreeEntry {
    pub path: String,
    pub mode: String,
    /// `blob`, `tree` or `commit` (a submodule).
    pub kind: String,
    pub sha: String,
}

/// An issue or a pull request: its number and page.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Issue {
    pub number: u64,
    pub url: String,
}

impl Issue {
    fn from_json(v: &Value) -> Issue {
        Issue {
            number: v.get("number").and_then(Value::as_u64).unwrap_or(0),
            url: str_at(v, &["html_url"]).unwrap_or_default().to_owned(),
        }
    }
}

/// A patch to propose as a pull request.
#[derive(Clone, Debug)]
pub struct Proposal {
    /// `None`: the repository's default branch.
    pub base: Option<String>,
    pub branch: String,
    pub title: String,
    pub body: String,
    pub message: String,
    pub labels: Vec<String>,
    pub draft: bool,
    pub files: Vec<FilePatch>,
    /// Where the patch's paths sit in the repository.
    pub dir: Option<String>,
}

/// What [`open_pull_request`] did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PullRequest {
    pub number: u64,
    pub url: String,
    pub branch: String,
    pub base: String,
    /// It existed already (the end of this run was acted on before).
    pub reused: bool,
}

/// Builds a commit with the patch on top of `base` and opens a pull
/// request from a branch named for the run.
pub async fn open_pull_request(
    gh: &GithubClient,
    p: &Proposal,
) -> Result<PullRequest, IntegrationError> {
    let base = match &p.base {
        Some(b) => b.clone(),
        None => gh.default_branch().await?,
    };
    let base_sha = gh.branch_head(&base).await?;
    let base_tree = gh.commit_tree(&base_sha).await?;
    let entries = tree_entries(gh, &base_tree, p).await?;
    let tree = gh.create_tree(&base_tree, &entries).await?;
    let commit = gh.create_commit(&p.message, &tree, &base_sha).await?;
    let mut reused = false;
    if !gh.create_branch(&p.branch, &commit).await? {
        if let Some(pr) = gh.find_pull(&p.branch).await? {
            return Ok(PullRequest {
                number: pr.number,
                url: pr.url,
                branch: p.branch.clone(),
                base,
                reused: true,
            });
        }
        gh.force_branch(&p.branch, &commit).await?;
        reused = true;
    }
    let pr = gh
        .create_pull(&p.title, &p.branch, &base, &p.body, p.draft)
        .await?;
    if !p.labels.is_empty() {
        gh.add_labels(pr.number, &p.labels).await?;
    }
    Ok(PullRequest {
        number: pr.number,
        url: pr.url,
        branch: p.branch.clone(),
        base,
        reused,
    })
}

/// The new tree's entries: each patched file's new blob (its mode kept),
/// `sha: null` for deletions.
async fn tree_entries(
    gh: &GithubClient,
    root: &str,
    p: &Proposal,
) -> Result<Vec<Value>, IntegrationError> {
    let full = |path: &str| match &p.dir {
        Some(d) => format!("{d}/{path}"),
        None => path.to_owned(),
    };
    let mut trees: HashMap<String, Vec<TreeEntry>> = HashMap::new();
    let mut entries = Vec::new();
    for f in &p.files {
        let mut mode = f.new_mode.clone();
        let original = match &f.old_path {
            None => String::new(),
            Some(old) => {
                let path = full(old);
                let entry = find_entry(gh, &mut trees, root, &path)
                    .await?
                    .ok_or_else(|| IntegrationError::NotInBase(path.clone()))?;
                mode = mode.or(Some(entry.mode.clone()));
                if f.new_path.as_deref() != Some(old.as_str()) {
                    entries.push(
                        json!({"path": path, "mode": entry.mode, "type": "blob", "sha": null}),
                    );
                }
                gh.blob(&entry.sha).await?
            }
        };
        if let Some(new) = &f.new_path {
            let content = f.apply(&original)?;
            let sha = gh.create_blob(&content).await?;
            entries.push(json!({
                "path": full(new),
                "mode": mode.unwrap_or_else(|| "100644".into()),
                "type": "blob",
                "sha": sha,
            }));
        }
    }
    Ok(entries)
}

/// Walks from the root tree to `path`, one directory at a time (cached).
async fn find_entry(
    gh: &GithubClient,
    trees: &mut HashMap<String, Vec<TreeEntry>>,
    root: &str,
    path: &str,
) -> Result<Option<TreeEntry>, IntegrationError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let Some((name, dirs)) = parts.split_last() else {
        return Ok(None);
    };
    let mut dir = String::new();
    let mut sha = root.to_owned();
    for (i, part) in std::iter::once(&"").chain(dirs.iter()).enumerate() {
        if i > 0 {
            let listing = &trees[&dir];
            let Some(next) = listing.iter().find(|e| e.path == *part && e.kind == "tree") else {
                return Ok(None);
            };
            sha = next.sha.clone();
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(part);
        }
        if !trees.contains_key(&dir) {
            let listing = gh.tree(&sha).await?;
            trees.insert(dir.clone(), listing);
        }
    }
    Ok(trees[&dir]
        .iter()
        .find(|e| e.path == *name && e.kind == "blob")
        .cloned())
}

/// An issue for a failed run.
#[derive(Clone, Debug)]
pub struct IssueDraft {
    /// Found in the body of the open issue this cascade reports to.
    pub marker: String,
    pub title: String,
    pub body: String,
    pub labels: Vec<String>,
}

/// What [`report_failure`] did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct IssueReport {
    pub number: u64,
    pub url: String,
    /// False: the open issue got a comment.
    pub created: bool,
}

/// Comments on this cascade's open issue, or opens one.
pub async fn report_failure(
    gh: &GithubClient,
    f: &IssueDraft,
) -> Result<IssueReport, IntegrationError> {
    if let Some(open) = gh.find_issue(&f.marker, &f.labels).await? {
        gh.comment(open.number, &f.body).await?;
        return Ok(IssueReport {
            number: open.number,
            url: open.url,
            created: false,
        });
    }
    let issue = gh.create_issue(&f.title, &f.body, &f.labels).await?;
    Ok(IssueReport {
        number: issue.number,
        url: issue.url,
        created: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_and_errors() {
        assert_eq!(encode("cascade/fix run", true), "cascade/fix%20run");
        assert_eq!(encode("o:cascade/x", false), "o%3Acascade%2Fx");
        let d = detail(
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"message": "Validation Failed", "errors": [{"message": "Reference already exists"}]}"#,
        );
        assert_eq!(
            d,
            "422 Unprocessable Entity: Validation Failed (Reference already exists)"
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let gh = GithubClient::new(
            cascade_exec::net::client_builder()
                .build()
                .expect("an HTTP client"),
            "https://x/",
            "ghp_secret".into(),
            "o/r",
        )
        .expect("client");
        let shown = format!("{gh:?}");
        assert!(
            !shown.contains("ghp_secret") && shown.contains("o/r"),
            "{shown}"
        );
        assert!(
            GithubClient::new(
                cascade_exec::net::client_builder()
                    .build()
                    .expect("an HTTP client"),
                "https://x",
                "t".into(),
                "nope"
            )
            .is_err()
        );
    }
}
