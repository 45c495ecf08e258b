//! The dashboard of `coordinator serve --http`, end to end in headless
//! Chromium: the page of a live run shows a stage running, then (updated by
//! the page's own polling, without a reload, when ChromeDriver is there)
//! success; what a skill outputs is shown as text, never as markup; a run
//! of 2,000 stages renders every row. A screenshot is kept in
//! `target/test-artifacts/dashboard.png`.
//!
//! Needs Debian's `chromium` (and `chromium-driver` for the live-update
//! check); without `/usr/bin/chromium` each test says so and returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cascade_tests::{Proc, TestSwarm, await_condition, http_get, http_request, write_tree};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

fn chromium_missing() -> bool {
    if Path::new(CHROMIUM).exists() {
        return false;
    }
    eprintln!(
        "SKIPPED: {CHROMIUM} is not installed (apt-get install -y chromium chromium-driver); \
         the dashboard is not tested in a browser"
    );
    true
}

/// Flags for a headless Chromium that touches nothing outside the test.
fn chromium_flags(profile: &Path) -> Vec<String> {
    [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// The DOM of `url` after its scripts ran for `budget_ms` of virtual time.
fn dump_dom(url: &str, budget_ms: u32) -> String {
    let profile = tempfile::tempdir().expect("chromium profile");
    let out = Command::new(CHROMIUM)
        .args(chromium_flags(profile.path()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && dom.contains("</html>"),
        "chromium --dump-dom {url}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// A screenshot of `url` under target/test-artifacts; returns its path.
fn screenshot(url: &str, name: &str) -> PathBuf {
    let dir = cascade_tests::binary("coordinator")
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("test-artifacts folder");
    let path = dir.join(name);
    let profile = tempfile::tempdir().expect("chromium profile");
    let status = Command::new(CHROMIUM)
        .args(chromium_flags(profile.path()))
        .arg("--virtual-time-budget=2000")
        .arg(format!("--screenshot={}", path.display()))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run chromium");
    assert!(status.success() && path.is_file(), "screenshot of {url}");
    println!("dashboard screenshot: {}", path.display());
    path
}

/// The `<tr>` of the stage `id` in a run page's DOM.
fn row<'a>(dom: &'a str, id: &str) -> &'a str {
    let code = format!("<code>{id}</code>");
    let at = dom
        .find(&code)
        .unwrap_or_else(|| panic!("no row for stage `{id}` in:\n{dom}"));
    let start = dom[..at].rfind("<tr ").expect("the row's start");
    let end = at + dom[at..].find("</tr>").expect("the row's end");
    &dom[start..end]
}

fn status_of(row: &str) -> &str {
    let key = "data-k=\"status\">";
    let at = row.find(key).expect("a status cell") + key.len();
    &row[at..at + row[at..].find('<').expect("the cell's end")]
}

fn api(addr: &str, path: &str) -> Value {
    let (status, body) = http_get(addr, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The id of the only run the coordinator lists, once it lists it.
fn only_run(addr: &str) -> String {
    await_condition("the run to be listed", Duration::from_secs(30), || {
        let runs = api(addr, "/api/runs");
        runs.get(0)?["run_id"].as_str().map(str::to_owned)
    })
}

/// `coordinator submit FILE --wait` on a thread: its exit code and stderr.
fn submit_in_background(
    swarm: &TestSwarm,
    file: &Path,
    out: &Path,
) -> std::thread::JoinHandle<(i32, String)> {
    let mut cmd = swarm.coordinator_cmd();
    cmd.arg("submit")
        .arg(file)
        .args(["--wait", "--output"])
        .arg(out);
    std::thread::spawn(move || {
        let o = cmd.output().expect("coordinator submit");
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    })
}

/// A ChromeDriver session (WebDriver over plain HTTP), ended on drop.
struct Browser {
    _driver: Proc,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(logs: &Path) -> Browser {
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg("--port=0");
        // ChromeDriver prints its port on stdout.
        let mut driver = Proc::spawn("chromedriver", cmd, logs);
        let stdout = logs.join("chromedriver.stdout");
        let port = await_condition("chromedriver's port", Duration::from_secs(30), || {
            if let Ok(Some(s)) = driver.child.try_wait() {
                panic!("chromedriver exited ({s}): {}", driver.stderr());
            }
            let text = std::fs::read_to_string(&stdout).ok()?;
            let at = text.find("started successfully on port ")?;
            let digits: String = text[at + 29..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            (!digits.is_empty()).then_some(digits)
        });
        let addr = format!("127.0.0.1:{port}");
        let profile = tempfile::tempdir().expect("chromium profile");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": chromium_flags(profile.path())}
        }}});
        let (status, body) =
            http_request(&addr, "POST", "/session", Some(&caps.to_string())).expect("new session");
        assert_eq!(status, 200, "new WebDriver session: {body}");
        let v: Value = serde_json::from_str(&body).expect("session JSON");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Browser {
            _driver: driver,
            addr,
            session,
            _profile: profile,
        }
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let (status, text) = http_request(&self.addr, method, &path, Some(&body.to_string()))
            .unwrap_or_else(|e| panic!("WebDriver {path}: {e}"));
        assert_eq!(status, 200, "WebDriver {method} {path}: {text}");
        serde_json::from_str::<Value>(&text).expect("WebDriver JSON")["value"].take()
    }

    fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` (a function body) in the page and returns its value.
    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            json!({"script": script, "args": []}),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let path = format!("/session/{}", self.session);
        let _ = http_request(&self.addr, "DELETE", &path, None);
    }
}

/// The status cell of the row whose stage is `id`, as the page shows it now.
fn live_status(browser: &Browser, id: &str) -> String {
    let script = format!(
        "for (const c of document.querySelectorAll('#stages code')) {{ \
           if (c.textContent === {id}) return c.closest('tr').querySelector('[data-k=status]').textContent; }} \
         return null;",
        id = json!(id)
    );
    browser
        .eval(&script)
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// A skill that blocks on a FIFO until the test writes to it: the stage
/// stays running exactly as long as the test wants.
fn gate_tree(dir: &Path) {
    let d = dir.display();
    let status = Command::new("mkfifo")
        .arg(dir.join("gate"))
        .status()
        .expect("mkfifo");
    assert!(status.success(), "mkfifo");
    write_tree(
        dir,
        &[
            (
                "skills/gate.yaml",
                &format!(
                    "timeout: 10m\nrun: |\n  touch {d}/started\n  read line < {d}/gate\n  echo '{{\"opened\": true}}'\n"
                ),
            ),
            (
                "c.yaml",
                "name: dashboard-live\n\
                 stages:\n\
                 \x20 - stage: prepare\n\
                 \x20   skill: echo\n\
                 \x20   inputs: {note: \"<img src=x onerror=alert(1)>\"}\n\
                 \x20 - stage: wait-here\n\
                 \x20   skill: gate\n\
                 \x20 - stage: report\n\
                 \x20   skill: echo\n\
                 \x20   inputs: {done: \"${wait-here.opened}\"}\n",
            ),
        ],
    );
}

fn open_gate(dir: &Path) {
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("gate"))
        .expect("open the gate FIFO");
    fifo.write_all(b"go\n").expect("write the gate");
}

#[test]
fn a_live_run_shows_running_then_success_and_escapes_outputs() {
    if chromium_missing() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    gate_tree(dir.path());
    let skills = dir.path().join("skills").display().to_string();
    let mut swarm = TestSwarm::new();
    swarm
        .env
        .push(("CASCADE_HTTP".into(), "127.0.0.1:0".into()));
    swarm.start_coordinator("c1");
    let addr = swarm.coordinators[0].http_addr();
    swarm.start_worker("w-dash", "gate,echo", &["--skills-dir", &skills]);

    let out = dir.path().join("r.json");
    let waiter = submit_in_background(&swarm, &dir.path().join("c.yaml"), &out);
    await_condition("the gate stage to start", Duration::from_secs(60), || {
        dir.path().join("started").exists().then_some(())
    });
    let run = only_run(&addr);
    let url = format!("http://{addr}/runs/{run}");

    // The page while the gate holds the run: the script polls a few times.
    let dom = dump_dom(&url, 3000);
    assert_eq!(status_of(row(&dom, "prepare")), "success", "{dom}");
    assert_eq!(status_of(row(&dom, "wait-here")), "running");
    assert_eq!(status_of(row(&dom, "report")), "pending");
    assert!(dom.contains("id=\"run-state\""), "{dom}");
    assert!(
        dom.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "the output is shown as text: {dom}"
    );
    assert!(!dom.contains("<img"), "no markup from an output: {dom}");
    assert!(
        !dom.contains("data-polls=\"0\""),
        "the page's script polled the API: {dom}"
    );

    // The same page, left open, turns the stage to success by itself.
    let browser = Path::new(CHROMEDRIVER)
        .exists()
        .then(|| Browser::start(swarm.logs.path()));
    if let Some(b) = &browser {
        b.goto(&url);
        assert_eq!(live_status(b, "wait-here"), "running");
    } else {
        eprintln!("{CHROMEDRIVER} is not installed: the live update without reload is not checked");
    }
    open_gate(dir.path());
    if let Some(b) = &browser {
        await_condition(
            "the open page to show the run's success",
            Duration::from_secs(60),
            || {
                let state = b.eval("return document.getElementById('run-state').textContent;");
                (live_status(b, "wait-here") == "success"
                    && live_status(b, "report") == "success"
                    && state == "success")
                    .then_some(())
            },
        );
    }
    let (code, stderr) = waiter.join().expect("submit thread");
    assert_eq!(code, 0, "{stderr}");

    // A later load: the final report, every stage done, nothing to poll.
    let dom = dump_dom(&url, 1000);
    for id in ["prepare", "wait-here", "report"] {
        assert_eq!(status_of(row(&dom, id)), "success", "{id}: {dom}");
    }
    assert!(
        row(&dom, "wait-here").contains("w-dash"),
        "the worker is shown"
    );
    assert!(dom.contains("data-done=\"1\""));
    screenshot(&url, "dashboard.png");

    let list = dump_dom(&format!("http://{addr}/"), 500);
    assert!(list.contains(&run), "{list}");
    let workers = dump_dom(&format!("http://{addr}/workers"), 500);
    assert!(workers.contains("w-dash"), "{workers}");
    let (status, memory) = http_get(&addr, &format!("/runs/{run}/memory"));
    assert_eq!(status, 200, "{memory}");
    let v = api(&addr, &format!("/api/runs/{run}/report"));
    assert_eq!(v["status"], "success", "{v}");
    assert_eq!(http_get(&addr, "/api/runs/no-such-run").0, 404);
}

#[test]
fn a_run_of_two_thousand_stages_renders_every_row() {
    if chromium_missing() {
        return;
    }
    const LAYERS: usize = 40;
    const WIDTH: usize = 50;
    let mut yaml = String::from("name: wide-and-deep\nstages:\n");
    for layer in 0..LAYERS {
        for i in 0..WIDTH {
            let deps = if layer == 0 {
                "[]".to_owned()
            } else {
                format!("[s{}-{i}]", layer - 1)
            };
            yaml.push_str(&format!(
                "  - {{stage: s{layer}-{i}, skill: noop, dependencies: {deps}}}\n"
            ));
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    write_tree(dir.path(), &[("c.yaml", &yaml)]);
    let mut swarm = TestSwarm::new();
    swarm
        .env
        .push(("CASCADE_HTTP".into(), "127.0.0.1:0".into()));
    swarm.start_coordinator("c1");
    let addr = swarm.coordinators[0].http_addr();
    swarm.start_worker("w1", "noop", &["--concurrency", "32"]);
    swarm.start_worker("w2", "noop", &["--concurrency", "32"]);
    let out = dir.path().join("r.json");
    let (code, _, stderr) = swarm.submit_wait(&dir.path().join("c.yaml"), &out, &[]);
    assert_eq!(code, 0, "{stderr}");
    let run = only_run(&addr);

    let v = api(&addr, &format!("/api/runs/{run}"));
    assert_eq!(v["total"], LAYERS * WIDTH);
    assert_eq!(v["stages"].as_array().map(Vec::len), Some(LAYERS * WIDTH));
    assert_eq!(v["counts"]["success"], LAYERS * WIDTH, "{}", v["counts"]);
    let last = &v["stages"][LAYERS * WIDTH - 1];
    assert_eq!(last["level"], LAYERS - 1, "{last}");
    let version = v["version"].as_u64().expect("a version");
    let delta = api(&addr, &format!("/api/runs/{run}?since={version}"));
    assert_eq!(delta["stages"], json!([]), "nothing changed since");

    let dom = dump_dom(&format!("http://{addr}/runs/{run}"), 1000);
    let rows = dom.matches("data-k=\"status\">success<").count();
    assert_eq!(rows, LAYERS * WIDTH, "every stage has its row");
    assert_eq!(dom.matches("<tr class=\"layer\">").count(), LAYERS);
    assert_eq!(status_of(row(&dom, "s39-49")), "success");
}
