//! The dashboard's HTML: server-rendered pages (no front-end build), every
//! user-controlled string (run and stage ids, outputs, errors, worker
//! names, memory) escaped by [`esc`]; the run page's script changes only
//! `textContent` and class names, never markup.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

use super::App;
use super::api::{self, ApiError};
use super::view::{Row, RunView, preview};
use crate::text::age;

/// Characters of a memory value shown on the memory page.
const MEMORY_PREVIEW: usize = 20_000;

/// `s` safe in HTML text and in quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` as one URL path segment (percent-encoded but for unreserved bytes).
pub(crate) fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const CSS: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d232a;background:#f7f8fa}
header{background:#1d232a;padding:.5em 1em}header a{color:#fff;margin-right:1.2em;text-decoration:none;font-weight:600}
main{padding:1em}h1{font-size:1.3em;margin:.2em 0 .6em}code{font-size:.95em}
table{border-collapse:collapse;background:#fff;width:100%}th,td{border-bottom:1px solid #e3e6ea;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eef0f3;font-weight:600}
td.out,td.err{max-width:26em;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;font-family:ui-monospace,monospace;font-size:.85em}
td.err{color:#a4161a}tr.layer td{background:#f0f3f7;font-weight:600;color:#555}
.st-success,tr.st-success td[data-k=status]{color:#137333}.st-failed,tr.st-failed td[data-k=status]{color:#a4161a}
.st-running,tr.st-running td[data-k=status]{color:#0b57d0;font-weight:600}.st-pending,tr.st-pending td[data-k=status]{color:#777}
.st-skipped,.st-cancelled,.st-partial,tr.st-skipped td[data-k=status],tr.st-cancelled td[data-k=status]{color:#8a6d00}
.st-queued,.st-submitted{color:#777}tr.st-running{background:#eef4ff}tr.st-failed{background:#fff0f0}
tr[class^=st-]{color:#1d232a}
.meta span{margin-right:1em}.err{color:#a4161a}#live{color:#777;font-size:.85em}pre{margin:0;white-space:pre-wrap}
"#;

/// The run page's live updates: polls the API for rows changed since the
/// version it has, and paints at most `CHUNK` rows per task so a large
/// update never blocks the page.
const RUN_JS: &str = r#"
(() => {
  const body = document.body;
  const run = body.dataset.run;
  let version = Number(body.dataset.version);
  let done = body.dataset.done === '1';
  const live = document.getElementById('live');
  const CHUNK = 250;
  let queue = [], at = 0, painting = false, polls = 0;
  const text = v => (v === null || v === undefined) ? '' : String(v);
  const fmt = {
    duration: v => (typeof v === 'number' && v > 0) ? v.toFixed(2) + 's' : '',
  };
  function paint() {
    const end = Math.min(at + CHUNK, queue.length);
    for (; at < end; at++) {
      const s = queue[at];
      const tr = document.getElementById('r' + s.i);
      if (!tr) continue;
      tr.className = 'st-' + (s.status || 'pending');
      for (const td of tr.querySelectorAll('[data-k]')) {
        const k = td.dataset.k;
        td.textContent = fmt[k] ? fmt[k](s[k]) : text(s[k]);
        if (td.classList.contains('out') || td.classList.contains('err')) td.title = td.textContent;
      }
    }
    if (at < queue.length) { setTimeout(paint, 0); return; }
    queue = []; at = 0; painting = false;
  }
  function header(j) {
    const st = document.getElementById('run-state');
    st.textContent = j.state; st.className = 'st-' + j.state;
    document.getElementById('run-error').textContent = text(j.error);
    document.getElementById('counts').textContent =
      Object.entries(j.counts).map(([k, n]) => k + ' ' + n).join(' · ');
  }
  async function poll() {
    try {
      const r = await fetch('/api/runs/' + encodeURIComponent(run) + '?since=' + version,
                            {cache: 'no-store'});
      if (r.ok) {
        const j = await r.json();
        version = j.version; done = j.finished;
        queue = queue.concat(j.stages);
        if (!painting) { painting = true; paint(); }
        header(j);
        polls += 1;
        live.textContent = done ? 'finished' : 'live';
        live.dataset.polls = String(polls);
        live.dataset.version = String(version);
      } else {
        live.textContent = 'the server said ' + r.status + '; retrying';
      }
    } catch (e) {
      live.textContent = 'disconnected; retrying';
    }
    if (!done) setTimeout(poll, 1000);
  }
  if (!done) poll();
})();
"#;

fn page(title: &str, body_attrs: &str, head: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Cascade</title><style>{CSS}</style>{head}</head><body{body_attrs}>\
         <header><nav><a href=\"/\">Runs</a><a href=\"/workers\">Workers</a>\
         <a href=\"/metrics\">Metrics</a></nav></header><main>{body}</main></body></html>",
        esc(title)
    ))
}

fn error_page(e: &ApiError) -> Response {
    let body = format!("<h1>{}</h1>", esc(&e.to_string()));
    (e.status(), page("error", "", "", &body)).into_response()
}

fn not_connected() -> Response {
    error_page(&ApiError::NotConnected)
}

/// A refresh every few seconds for the list pages (the run page polls).
const REFRESH: &str = "<meta http-equiv=\"refresh\" content=\"5\">";

pub(crate) async fn runs(State(app): State<Arc<App>>) -> Response {
    if app.swarm().is_none() {
        return not_connected();
    }
    let now = crate::driver::nats::now_ms();
    let runs = api::run_list(&app, 200);
    let mut body = String::from("<h1>Runs</h1>");
    if runs.is_empty() {
        body.push_str("<p>No runs yet: <code>coordinator submit FILE</code> starts one.</p>");
    } else {
        body.push_str(
            "<table id=\"runs\"><thead><tr><th>run</th><th>cascade</th><th>state</th>\
             <th>stages</th><th>owner</th><th>created</th><th>updated</th><th>error</th></tr>\
             </thead><tbody>",
        );
        for r in &runs {
            let state = super::metrics::state_label(r.state);
            let counts = api::stage_counts(r);
            let done = counts
                .iter()
                .filter(|(s, _)| !matches!(s.as_str(), "pending" | "running"))
                .map(|(_, n)| n)
                .sum::<usize>();
            let detail = counts
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = write!(
                body,
                "<tr class=\"st-{state}\"><td><a href=\"/runs/{}\"><code>{}</code></a></td>\
                 <td>{}</td><td class=\"st-{state}\">{state}</td><td title=\"{}\">{done}/{}</td>\
                 <td>{}</td><td title=\"{}\">{}</td><td title=\"{}\">{}</td><td class=\"err\">{}</td></tr>",
                esc(&seg(r.run_id.as_str())),
                esc(r.run_id.as_str()),
                esc(&r.cascade),
                esc(&detail),
                r.stages.len(),
                esc(r.owner.as_deref().unwrap_or("-")),
                r.created_at,
                age(r.created_at, now),
                r.updated_at,
                age(r.updated_at, now),
                esc(&preview(r.error.as_deref().unwrap_or(""))),
            );
        }
        body.push_str("</tbody></table>");
    }
    page("Runs", "", REFRESH, &body).into_response()
}

pub(crate) async fn workers(State(app): State<Arc<App>>) -> Response {
    if app.swarm().is_none() {
        return not_connected();
    }
    let mut body = String::from("<h1>Workers</h1>");
    let list = api::worker_list(&app);
    if list.is_empty() {
        body.push_str("<p>No worker has registered.</p>");
    }
    body.push_str(
        "<table id=\"workers\"><thead><tr><th>name</th><th>skills</th><th>labels</th><th>role</th>\
         <th>load</th><th>completed</th><th>failed</th><th>models</th><th>state</th>\
         <th>heartbeat</th></tr></thead><tbody>",
    );
    for (w, live, age_s) in &list {
        let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let state = match (live, w.draining) {
            (false, _) => "gone",
            (true, true) => "draining",
            (true, false) => "live",
        };
        let role = match w.role {
            cascade_proto::wire::WorkerRole::Member => "member",
            cascade_proto::wire::WorkerRole::Lead => "lead",
        };
        let _ = write!(
            body,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{role}</td><td>{}/{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{state}</td><td>{age_s:.1}s ago</td></tr>",
            esc(&w.name),
            esc(&w.skills.join(", ")),
            esc(&labels.join(", ")),
            w.in_flight,
            w.concurrency,
            w.completed,
            w.failed,
            esc(&w.models.join(", ")),
        );
    }
    body.push_str("</tbody></table>");
    page("Workers", "", REFRESH, &body).into_response()
}

pub(crate) async fn run(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match api::view(&app, &id).await {
        Ok(v) => page(
            &format!("Run {id}"),
            &format!(
                " data-run=\"{}\" data-version=\"{}\" data-done=\"{}\"",
                esc(&id),
                v.version,
                u8::from(v.finished)
            ),
            "",
            &run_body(&v),
        )
        .into_response(),
        Err(e) => error_page(&e),
    }
}

fn run_body(v: &RunView) -> String {
    let now = crate::driver::nats::now_ms();
    let id = v.run_id.as_str();
    let h = &v.header;
    let mut b = String::with_capacity(256 + v.rows.len() * 320);
    let _ = write!(
        b,
        "<h1>Run <code>{}</code></h1><p class=\"meta\"><span>cascade <b>{}</b></span>\
         <span>state <b id=\"run-state\" class=\"st-{}\">{}</b></span><span>owner {}</span>\
         <span title=\"{}\">created {}</span><span><a href=\"/runs/{}/memory\">memory</a></span>\
         <span><a href=\"/api/runs/{}\">JSON</a></span><span><a href=\"/api/runs/{}/report\">report</a></span></p>\
         <p id=\"run-error\" class=\"err\">{}</p>",
        esc(id),
        esc(&h.cascade),
        esc(&h.state),
        esc(&h.state),
        esc(h.owner.as_deref().unwrap_or("-")),
        h.created_at,
        age(h.created_at, now),
        esc(&seg(id)),
        esc(&seg(id)),
        esc(&seg(id)),
        esc(h.error.as_deref().unwrap_or("")),
    );
    if let Some(c) = &h.cancel_requested {
        let _ = write!(b, "<p class=\"err\">cancel requested: {}</p>", esc(c));
    }
    if let Some(n) = &v.note {
        let _ = write!(b, "<p class=\"err\">{}</p>", esc(n));
    }
    let counts: Vec<String> = v.counts().iter().map(|(k, n)| format!("{k} {n}")).collect();
    let _ = write!(
        b,
        "<p id=\"counts\">{}</p><p id=\"live\" data-polls=\"0\" data-version=\"{}\">{}</p>",
        esc(&counts.join(" · ")),
        v.version,
        if v.finished { "finished" } else { "live" }
    );
    b.push_str(
        "<table id=\"stages\"><thead><tr><th>level</th><th>stage</th><th>type</th><th>status</th>\
         <th>attempts</th><th>workers</th><th>duration</th><th>branch</th><th>output</th>\
         <th>error</th></tr></thead><tbody>",
    );
    let mut layer = None;
    for (i, row) in v.rows.iter().enumerate() {
        if row.nest == 0 && layer != Some(row.level) {
            layer = Some(row.level);
            let _ = write!(
                b,
                "<tr class=\"layer\"><td colspan=\"10\">layer {}</td></tr>",
                row.level
            );
        }
        stage_row(&mut b, i, row);
    }
    b.push_str("</tbody></table>");
    let _ = write!(b, "<script>{RUN_JS}</script>");
    b
}

fn stage_row(b: &mut String, i: usize, row: &Row) {
    let d = &row.data;
    let s = |k: &str| -> String {
        match d.get(k) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => esc(s),
            Some(v) => esc(&v.to_string()),
        }
    };
    let status = d.get("status").and_then(Value::as_str).unwrap_or("pending");
    let duration = d
        .get("duration")
        .and_then(Value::as_f64)
        .filter(|x| *x > 0.0)
        .map(|x| format!("{x:.2}s"))
        .unwrap_or_default();
    let mut title = String::new();
    if !row.deps.is_empty() {
        title = format!("after {}", row.deps.join(", "));
    }
    if let Some(u) = &row.under {
        title = format!("in {u}; {title}");
    }
    let _ = write!(
        b,
        "<tr id=\"r{i}\" class=\"st-{}\"><td>{}</td>\
         <td style=\"padding-left:{}em\" title=\"{}\"><code>{}</code></td>\
         <td data-k=\"type\">{}</td><td data-k=\"status\">{}</td><td data-k=\"attempts\">{}</td>\
         <td data-k=\"workers\">{}</td><td data-k=\"duration\">{duration}</td>\
         <td data-k=\"branch_taken\">{}</td><td class=\"out\" data-k=\"output\" title=\"{out}\">{out}</td>\
         <td class=\"err\" data-k=\"error\" title=\"{err}\">{err}</td></tr>",
        esc(status),
        row.level,
        0.5 + 1.5 * row.nest as f64,
        esc(&title),
        esc(&row.id),
        s("type"),
        esc(status),
        s("attempts"),
        s("workers"),
        s("branch_taken"),
        out = s("output"),
        err = s("error"),
    );
}

pub(crate) async fn memory(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let v = match api::view(&app, &id).await {
        Ok(v) => v,
        Err(e) => return error_page(&e),
    };
    let mut b = format!(
        "<h1>Memory of run <a href=\"/runs/{}\"><code>{}</code></a></h1>",
        esc(&seg(&id)),
        esc(&id)
    );
    if v.memory.is_empty() {
        b.push_str("<p>No memory written.</p>");
    } else {
        b.push_str(
            "<table id=\"memory\"><thead><tr><th>key</th><th>value</th></tr></thead><tbody>",
        );
        for (k, val) in &v.memory {
            let text = serde_json::to_string_pretty(val).unwrap_or_default();
            let shown = match text.char_indices().nth(MEMORY_PREVIEW) {
                Some((i, _)) => format!("{}…", &text[..i]),
                None => text,
            };
            let _ = write!(
                b,
                "<tr><td><code>{}</code></td><td><pre>{}</pre></td></tr>",
                esc(k),
                esc(&shown)
            );
        }
        b.push_str("</tbody></table>");
    }
    let head = if v.finished { "" } else { REFRESH };
    page(&format!("Memory of {id}"), "", head, &b).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_segments() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
        assert_eq!(seg("run 1/ü"), "run%201%2F%C3%BC");
        assert_eq!(seg("019a-ok_~."), "019a-ok_~.");
    }
}
