//! Notifications: run events (started, success, failure, a branch taken)
//! to the log, to webhooks (the event as JSON) and to Slack-compatible
//! incoming webhooks (`{"text": ..}`, with `blocks` when asked).
//!
//! ```text
//!  driver ─ send(Message) ─▶ Notifier: one delivery task per subscribed target
//!                             (TaskTracker), each: POST ─▶ 2xx? done
//!                                                   └─ transport, 408, 429, 5xx: retry
//!                                                      (backoff, `retries` times, each
//!                                                      attempt bounded by `timeout`)
//!  run end ─ drain() ─▶ every delivery's record (the results' `notifications`)
//! ```
//! A notification never fails the run: a delivery that gives up is logged
//! once, here, and recorded. Webhook URLs can be secrets (Slack's are): only
//! their host appears in records and logs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::task::TaskTracker;

use super::Env;
use cascade_core::spec::{Notification, NotifyEvent, NotifyTarget, UrlSource};

/// Longest pause between two delivery attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// First pause between attempts; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// One event as every target gets it.
#[derive(Clone, Debug)]
pub struct Message {
    pub event: NotifyEvent,
    /// One line for people (Slack's `text`, the log line).
    pub text: String,
    /// What a webhook receives; `event` and `text` are added.
    pub payload: Value,
}

/// What became of one delivery.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Delivery {
    /// `log`, `webhook example.com`, `slack hooks.slack.com`.
    pub target: String,
    pub event: NotifyEvent,
    pub delivered: bool,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Sends messages to a run's targets in the background and keeps the
/// records until [`Notifier::drain`].
pub struct Notifier {
    targets: Vec<Notification>,
    /// `None` when no HTTP client could be started: webhook and Slack
    /// deliveries then fail (recorded), the log still works.
    http: Option<reqwest::Client>,
    env: Env,
    tracker: TaskTracker,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl Notifier {
    pub fn new(targets: Vec<Notification>, http: Option<reqwest::Client>, env: Env) -> Self {
        Notifier {
            targets,
            http,
            env,
            tracker: TaskTracker::new(),
            deliveries: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn wants(&self, event: NotifyEvent) -> bool {
        self.targets.iter().any(|t| t.on.contains(&event))
    }

    /// Starts delivering `msg` to every target subscribed to its event.
    pub fn send(&self, msg: &Message) {
        for target in self.targets.iter().filter(|t| t.on.contains(&msg.event)) {
            let (target, msg) = (target.clone(), msg.clone());
            let (http, env, records) =
                (self.http.clone(), self.env.clone(), self.deliveries.clone());
            self.tracker.spawn(async move {
                let d = deliver(http.as_ref(), &target, &msg, &env).await;
                if let Ok(mut list) = records.lock() {
                    list.push(d);
                }
            });
        }
    }

    /// Waits for every delivery started so far (each is bounded by its
    /// timeouts and retries) and returns all records.
    pub async fn drain(&self) -> Vec<Delivery> {
        self.tracker.close();
        self.tracker.wait().await;
        self.tracker.reopen();
        self.deliveries
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default()
    }
}

/// The URL a target posts to, and how records name it.
fn resolve(url: &UrlSource, env: &Env) -> Result<String, super::IntegrationError> {
    match url {
        UrlSource::Literal(u) => Ok(u.clone()),
        UrlSource::Env(var) => env
            .get(var)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| super::IntegrationError::UrlUnset(var.clone())),
    }
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| {
                u.port()
                    .map_or_else(|| h.to_owned(), |p| format!("{h}:{p}"))
            })
        })
        .unwrap_or_else(|| "(bad URL)".into())
}

/// The body a target receives.
pub fn body(target: &NotifyTarget, msg: &Message) -> Value {
    match target {
        NotifyTarget::Slack {
            blocks, channel, ..
        } => {
            let mut b = json!({ "text": msg.text });
            if *blocks {
                b["blocks"] = slack_blocks(msg);
            }
            if let Some(c) = channel {
                b["channel"] = json!(c);
            }
            b
        }
        NotifyTarget::Webhook { .. } | NotifyTarget::Log => {
            let mut p = match &msg.payload {
                Value::Object(m) => m.clone(),
                _ => serde_json::Map::new(),
            };
            p.insert("event".into(), json!(msg.event));
            p.insert("text".into(), json!(msg.text));
            Value::Object(p)
        }
    }
}

/// A section with the text and a context line with the run's id.
fn slack_blocks(msg: &Message) -> Value {
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": msg.text},
    })];
    let mut context = Vec::new();
    for (label, key) in [("run", "run_id"), ("cascade", "cascade")] {
        if let Some(v) = msg.payload.get(key).and_then(Value::as_str) {
            context.push(json!({"type": "mrkdwn", "text": format!("{label} `{v}`")}));
        }
    }
    if !context.is_empty() {
        blocks.push(json!({"type": "context", "elements": context}));
    }
    Value::Array(blocks)
}

/// Delivers one message to one target, retrying what may pass next time.
pub async fn deliver(
    http: Option<&reqwest::Client>,
    target: &Notification,
    msg: &Message,
    env: &Env,
) -> Delivery {
    let kind = target.target.kind();
    let url = match &target.target {
        NotifyTarget::Log => {
            if msg.event == NotifyEvent::Failure {
                tracing::warn!(target: "cascade::notify", event = msg.event.as_str(), "{}", msg.text);
            } else {
                tracing::info!(target: "cascade::notify", event = msg.event.as_str(), "{}", msg.text);
            }
            return Delivery {
                target: kind.into(),
                event: msg.event,
                delivered: true,
                attempts: 1,
                error: None,
            };
        }
        NotifyTarget::Webhook { url } | NotifyTarget::Slack { url, .. } => resolve(url, env),
    };
    let ready = url.and_then(|u| match http {
        Some(h) => Ok((u, h)),
        None => Err(super::IntegrationError::NoHttpClient),
    });
    let (url, http) = match ready {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(
                target = kind,
                event = msg.event.as_str(),
                "notification not sent: {e}"
            );
            return Delivery {
                target: kind.into(),
                event: msg.event,
                delivered: false,
                attempts: 0,
                error: Some(e.to_string()),
            };
        }
    };
    let label = format!("{kind} {}", host_of(&url));
    let payload = body(&target.target, msg);
    let mut attempts = 0;
    let mut pause = FIRST_BACKOFF;
    let error = loop {
        attempts += 1;
        let sent = http
            .post(&url)
            .timeout(target.timeout)
            .json(&payload)
            .send()
            .await;
        let (retry, err) = match sent {
            Ok(resp) if resp.status().is_success() => break None,
            Ok(resp) => {
                let s = resp.status();
                let retry = s.is_server_error() || s.as_u16() == 429 || s.as_u16() == 408;
                (retry, format!("answered {s}"))
            }
            // The error's text may hold the URL: say what happened, not where.
            Err(e) if e.is_timeout() => (true, format!("no answer within {:?}", target.timeout)),
            Err(e) if e.is_connect() => (true, "cannot connect".to_owned()),
            Err(_) => (true, "the request failed".to_owned()),
        };
        if !retry || attempts > target.retries {
            break Some(err);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_BACKOFF);
    };
    if let Some(e) = &error {
        tracing::warn!(target = %label, event = msg.event.as_str(), attempts, "notification not delivered: {e}");
    }
    Delivery {
        target: label,
        event: msg.event,
        delivered: error.is_none(),
        attempts,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg() -> Message {
        Message {
            event: NotifyEvent::Failure,
            text: "❌ demo failed".into(),
            payload: json!({"cascade": "demo", "run_id": "r1", "status": "failed"}),
        }
    }

    #[test]
    fn bodies() {
        let slack = NotifyTarget::Slack {
            url: UrlSource::Literal("https://h/x".into()),
            blocks: false,
            channel: None,
        };
        assert_eq!(body(&slack, &msg()), json!({"text": "❌ demo failed"}));
        let rich = NotifyTarget::Slack {
            url: UrlSource::Literal("https://h/x".into()),
            blocks: true,
            channel: Some("#ci".into()),
        };
        let b = body(&rich, &msg());
        assert_eq!(b["channel"], json!("#ci"));
        assert_eq!(b["blocks"][0]["text"]["text"], json!("❌ demo failed"));
        assert_eq!(b["blocks"][1]["elements"][0]["text"], json!("run `r1`"));
        let hook = NotifyTarget::Webhook {
            url: UrlSource::Literal("https://h/x".into()),
        };
        assert_eq!(
            body(&hook, &msg()),
            json!({"cascade": "demo", "run_id": "r1", "status": "failed", "event": "failure", "text": "❌ demo failed"})
        );
    }

    #[test]
    fn urls_from_the_environment_and_hosts_only() {
        let env = Env::fixed([("HOOK", "https://hooks.example:8443/T/secret")]);
        let url = resolve(&UrlSource::Env("HOOK".into()), &env).expect("set");
        assert_eq!(host_of(&url), "hooks.example:8443");
        let err = resolve(&UrlSource::Env("NOPE".into()), &env).expect_err("unset");
        assert!(err.to_string().contains("`NOPE`"), "{err}");
    }
}
