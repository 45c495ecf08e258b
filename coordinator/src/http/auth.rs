//! Who may read the dashboard and its API. On a loopback address anyone on
//! the machine may (as with any local tool); on any other address a token
//! is required, and `serve` refuses to start without one.
//!
//! ```text
//!  /healthz /readyz /metrics      open (probes and scrapers; NetworkPolicies fence them)
//!  /login?token=TOKEN             open; sets the cookie if TOKEN is right
//!  everything else                Authorization: Bearer TOKEN
//!                                 or the cookie GET /login?token=TOKEN sets
//!                                 (HttpOnly, SameSite=Strict: another site's
//!                                 page cannot make the browser send it)
//!  a method other than GET/HEAD   the bearer header, or the cookie with an
//!                                 Origin of this host (CSRF)
//! ```
//! Tokens are compared in constant time.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use subtle::ConstantTimeEq;

/// The cookie the dashboard's login sets.
const COOKIE: &str = "cascade_token";

/// Paths served to anyone: liveness, readiness, metrics, and the login
/// (which checks the token itself).
const OPEN: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/login"];

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "--http {0} is reachable from other machines: set --http-token (env CASCADE_HTTP_TOKEN) to a secret, or serve on a loopback address (127.0.0.1)"
    )]
    TokenRequired(SocketAddr),
    #[error("--http-token must be at least 16 characters (it guards the swarm's runs)")]
    TokenTooShort,
}

/// The policy of one endpoint.
#[derive(Clone, Debug)]
pub struct Access {
    token: Option<Arc<str>>,
}

impl Access {
    /// No token: only on a loopback address.
    pub fn new(addr: SocketAddr, token: Option<String>) -> Result<Access, AuthError> {
        match token {
            Some(t) if t.len() < 16 => Err(AuthError::TokenTooShort),
            Some(t) => Ok(Access {
                token: Some(t.into()),
            }),
            None if addr.ip().is_loopback() => Ok(Access { token: None }),
            None => Err(AuthError::TokenRequired(addr)),
        }
    }

    fn matches(&self, given: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(given.as_bytes())))
    }

    /// Whether a request with these headers may have `path` by `method`.
    fn allows(&self, method: &Method, path: &str, headers: &HeaderMap) -> bool {
        if self.token.is_none() || OPEN.contains(&path) {
            return true;
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| self.matches(t.trim()));
        if bearer {
            return true;
        }
        let cookie = cookie(headers, COOKIE).is_some_and(|t| self.matches(t));
        let reads = method == Method::GET || method == Method::HEAD;
        cookie && (reads || same_origin(headers))
    }
}

/// The value of cookie `name`.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// The request's Origin is this host (a page of the dashboard sent it).
fn same_origin(headers: &HeaderMap) -> bool {
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest == host)
}

/// The middleware: 401 unless [`Access::allows`].
pub async fn guard(State(access): State<Access>, req: Request, next: Next) -> Response {
    if access.allows(req.method(), req.uri().path(), req.headers()) {
        return next.run(req).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a token is required: send `Authorization: Bearer TOKEN`, or open /login?token=TOKEN in a browser\n",
    )
        .into_response()
}

/// `GET /login?token=T`: sets the cookie when T is right, then shows the runs.
pub async fn login(
    State(access): State<Access>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    match q.get("token") {
        Some(t) if access.token.is_none() || access.matches(t) => {
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = format!("{COOKIE}={t}; HttpOnly; SameSite=Strict; Path=/").parse() {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        _ => (StatusCode::UNAUTHORIZED, "wrong or missing token\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), v.parse().expect("header"));
        }
        h
    }

    #[test]
    fn no_token_only_on_loopback() {
        assert!(Access::new("127.0.0.1:9090".parse().expect("addr"), None).is_ok());
        assert!(Access::new("[::1]:9090".parse().expect("addr"), None).is_ok());
        assert!(matches!(
            Access::new("0.0.0.0:9090".parse().expect("addr"), None),
            Err(AuthError::TokenRequired(_))
        ));
        assert!(matches!(
            Access::new("0.0.0.0:9090".parse().expect("addr"), Some("short".into())),
            Err(AuthError::TokenTooShort)
        ));
    }

    #[test]
    fn the_token_the_cookie_and_csrf() {
        let a = Access::new(
            "0.0.0.0:1".parse().expect("addr"),
            Some("0123456789abcdef".into()),
        )
        .expect("access");
        let get = Method::GET;
        let post = Method::POST;
        assert!(a.allows(&get, "/healthz", &HeaderMap::new()));
        assert!(a.allows(&get, "/metrics", &HeaderMap::new()));
        assert!(!a.allows(&get, "/api/runs", &HeaderMap::new()));
        let bearer = headers(&[(header::AUTHORIZATION, "Bearer 0123456789abcdef")]);
        assert!(a.allows(&get, "/api/runs", &bearer));
        assert!(a.allows(&post, "/api/runs/x/cancel", &bearer));
        let wrong = headers(&[(header::AUTHORIZATION, "Bearer 0123456789abcdeX")]);
        assert!(!a.allows(&get, "/api/runs", &wrong));
        let cookie = headers(&[(header::COOKIE, "a=b; cascade_token=0123456789abcdef")]);
        assert!(a.allows(&get, "/", &cookie));
        assert!(!a.allows(&post, "/api/runs/x/cancel", &cookie), "no Origin");
        let cross = headers(&[
            (header::COOKIE, "cascade_token=0123456789abcdef"),
            (header::HOST, "dash:9090"),
            (header::ORIGIN, "https://evil.example"),
        ]);
        assert!(!a.allows(&post, "/api/runs/x/cancel", &cross));
        let same = headers(&[
            (header::COOKIE, "cascade_token=0123456789abcdef"),
            (header::HOST, "dash:9090"),
            (header::ORIGIN, "http://dash:9090"),
        ]);
        assert!(a.allows(&post, "/api/runs/x/cancel", &same));
    }
}
