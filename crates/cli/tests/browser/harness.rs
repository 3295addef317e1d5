//! One `grantkeeper dev` process and one headless Chromium behind chromedriver, shared by every
//! scenario, and the steps scenarios take in them.
//!
//! Scenarios run one after another in the same browser: each starts from a blank window with
//! no cookies, at the size it asks for, and uses accounts of its own, so that none depends on
//! another. A failing scenario saves what every window showed under
//! `target/browser-artifacts/<scenario>/`, and the others still run; the test fails at the end,
//! naming the failed ones. `GRANTKEEPER_BROWSER_ONLY=name,name` runs some of them.

use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::wd::WindowHandle;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use grantkeeper_core::Stopwatch;
use serde_json::{Value, json};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_grantkeeper");

/// How long a step may take before the scenario fails (popups, refreshes, page loads).
const STEP: Duration = Duration::from_secs(20);

/// The Chromium flags of DEVELOPERS.md; the profile directory is added per browser.
const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
];

/// A running `grantkeeper dev`, killed when dropped.
pub struct Dev {
    child: Child,
    pub url: String,
    pub api_key: String,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dev {
    /// Starts `grantkeeper dev` on a free port with a fresh data dir.
    #[allow(clippy::zombie_processes)] // `Dev` kills and waits for the child when dropped
    pub fn start() -> Dev {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut child = Command::new(BIN)
            .args(["dev", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("dev ended before listening").unwrap();
            if let Some(url) = line.strip_prefix("listening on ") {
                break url.to_owned();
            }
        };
        // Keep reading, or a full pipe would block the server.
        std::thread::spawn(move || lines.for_each(drop));
        let api_key = std::fs::read_to_string(data.join("dev-api-key"))
            .unwrap()
            .trim()
            .to_owned();
        Dev {
            child,
            url,
            api_key,
            data,
            _dir: dir,
        }
    }

    /// A call to the emulator's control API.
    pub async fn emulator(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let mut req = reqwest::Client::new().request(
            method.parse().unwrap(),
            format!("{}/_google/_emulator/{path}", self.url),
        );
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        assert!(r.status().is_success(), "{method} {path}: {}", r.status());
        r.json().await.unwrap_or(Value::Null)
    }

    /// A call to the `/v1` API with the dev key.
    pub async fn v1(&self, method: &str, path: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .request(method.parse().unwrap(), format!("{}/v1/{path}", self.url))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Signs `email` in as the web client would, without a browser: the session cookie and
    /// the user's sub.
    pub async fn sign_in(&self, email: &str) -> (String, String) {
        let secret: Value = serde_json::from_str(
            &std::fs::read_to_string(self.data.join("client_secret.json")).unwrap(),
        )
        .unwrap();
        let minted = self
            .emulator(
                "POST",
                "codes",
                Some(
                    json!({"email": email, "client_id": secret["web"]["client_id"],
                    "scope": "openid email profile https://www.googleapis.com/auth/drive.appdata",
                    "redirect_uri": "postmessage"}),
                ),
            )
            .await;
        let r = reqwest::Client::new()
            .post(format!("{}/authcode", self.url))
            .header("x-requested-with", "XmlHttpRequest")
            .header("origin", &self.url)
            .header("content-type", "application/octet-stream")
            .body(minted["code"].as_str().unwrap().to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cookie = r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let body: Value = r.json().await.unwrap();
        (cookie, body["user"]["sub"].as_str().unwrap().to_owned())
    }

    /// The demo page's Drive listing for the session `cookie`: its HTTP status.
    pub async fn list_files(&self, cookie: &str) -> u16 {
        reqwest::Client::new()
            .get(format!("{}/demo/files", self.url))
            .header("cookie", cookie)
            .header("x-requested-with", "XmlHttpRequest")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// A headless Chromium session, with its chromedriver.
pub struct Browser {
    pub client: Client,
    driver: Child,
    /// chromedriver's base URL and this session's id, for its own commands (logs, network).
    webdriver: String,
    session: String,
    main: WindowHandle,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts chromedriver and a Chromium session; None (after saying why) when Chromium or
    /// its driver is not installed and this is not CI.
    pub async fn open() -> Option<Browser> {
        let driver = find_program("GRANTKEEPER_CHROMEDRIVER", &["chromedriver"]);
        let chromium = find_program(
            "GRANTKEEPER_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        let (Some(driver), Some(chromium)) = (driver, chromium) else {
            grantkeeper_testkit::cannot_run(
                "chromium or chromedriver not found (apt-get install chromium chromium-driver)",
            );
            return None;
        };
        let port = free_port();
        let mut driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let webdriver = format!("http://127.0.0.1:{port}");
        let waited = Stopwatch::start();
        loop {
            let ready = reqwest::get(format!("{webdriver}/status"))
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if ready.is_some() {
                break;
            }
            if waited.elapsed() > STEP {
                let _ = driver.kill();
                panic!("chromedriver did not start");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({"binary": chromium, "args": args}),
        );
        // The browser's console, read by `console_errors`.
        caps.insert("goog:loggingPrefs".to_owned(), json!({"browser": "ALL"}));
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&webdriver)
            .await
            .unwrap();
        let main = client.window().await.unwrap();
        let session = client.session_id().await.unwrap().unwrap();
        Some(Browser {
            client,
            driver,
            webdriver,
            session,
            main,
            _profile: profile,
        })
    }

    /// Makes the viewport `width` x `height` CSS pixels (headless Chromium's window is larger
    /// than its viewport by a margin of its own).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
        let inner = self.js("[window.innerWidth, window.innerHeight]").await;
        let (w, h) = (inner[0].as_u64().unwrap(), inner[1].as_u64().unwrap());
        let grow = |want: u32, got: u64| (2 * u64::from(want)).saturating_sub(got) as u32;
        if (w, h) != (u64::from(width), u64::from(height)) {
            self.client
                .set_window_size(grow(width, w), grow(height, h))
                .await
                .unwrap();
        }
    }

    /// Back to one blank window with no cookies for `origin`, at `width` x `height`.
    async fn reset(&self, origin: &str, width: u32, height: u32) {
        for w in self.client.windows().await.unwrap_or_default() {
            if w != self.main && self.client.switch_to_window(w).await.is_ok() {
                let _ = self.client.close_window().await;
            }
        }
        self.client
            .switch_to_window(self.main.clone())
            .await
            .unwrap();
        self.set_offline(false).await;
        // Cookies are deleted per page: the console's live under /admin.
        for path in ["/healthz", "/admin/console.js"] {
            self.client.goto(&format!("{origin}{path}")).await.unwrap();
            self.client.delete_all_cookies().await.unwrap();
        }
        self.console_errors().await;
        self.resize(width, height).await;
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Evaluates a JavaScript expression in the current window.
    pub async fn js(&self, expr: &str) -> Value {
        self.client
            .execute(&format!("return ({expr});"), vec![])
            .await
            .unwrap()
    }

    /// Waits until `expr` is true in the page; fails with `what` and the page's messages.
    pub async fn until(&self, expr: &str, what: &str) {
        let waited = Stopwatch::start();
        loop {
            let ok = self
                .client
                .execute(
                    &format!("try {{ return !!({expr}); }} catch (e) {{ return false; }}"),
                    vec![],
                )
                .await
                .map(|v| v == Value::Bool(true))
                .unwrap_or(false);
            if ok {
                return;
            }
            if waited.elapsed() > STEP {
                let shown = self.messages().await;
                panic!("timed out waiting for {what} (`{expr}`); messages shown: {shown:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        self.client
            .wait()
            .at_most(STEP)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking {css}: {e}"));
    }

    /// A click where a person would click, on the middle of the element, whatever element
    /// takes it there (a row's link covering the row).
    pub async fn press(&self, css: &str) {
        let element = self.client.find(Locator::Css(css)).await.unwrap();
        self.client
            .execute(
                "arguments[0].scrollIntoView({block: 'center'});",
                vec![serde_json::to_value(&element).unwrap()],
            )
            .await
            .unwrap();
        let press = MouseActions::new("mouse".to_owned())
            .then(PointerAction::MoveToElement {
                element,
                duration: None,
                x: 0.0,
                y: 0.0,
            })
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Up {
                button: MOUSE_BUTTON_LEFT,
            });
        self.client.perform_actions(press).await.unwrap();
        self.client.release_actions().await.unwrap();
    }

    /// A double click as a person makes it: two presses of the mouse button in a row.
    pub async fn double_click(&self, css: &str) {
        let element = self.client.find(Locator::Css(css)).await.unwrap();
        self.client
            .execute(
                "arguments[0].scrollIntoView({block: 'center'});",
                vec![serde_json::to_value(&element).unwrap()],
            )
            .await
            .unwrap();
        let press = MouseActions::new("mouse".to_owned())
            .then(PointerAction::MoveToElement {
                element,
                duration: None,
                x: 0.0,
                y: 0.0,
            })
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Up {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            })
            .then(PointerAction::Up {
                button: MOUSE_BUTTON_LEFT,
            });
        self.client.perform_actions(press).await.unwrap();
        self.client.release_actions().await.unwrap();
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let el = self.client.find(Locator::Css(css)).await.unwrap();
        el.clear().await.unwrap();
        el.send_keys(text).await.unwrap();
    }

    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    pub async fn visible(&self, css: &str) -> bool {
        match self.client.find(Locator::Css(css)).await {
            Ok(el) => el.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Whether the element is wholly inside the viewport (where the person is looking).
    pub async fn in_view(&self, css: &str) -> bool {
        self.js(&format!(
            "(() => {{ const r = document.querySelector({css:?}).getBoundingClientRect(); \
             return r.height > 0 && r.top >= 0 && r.bottom <= window.innerHeight; }})()"
        ))
        .await
            == Value::Bool(true)
    }

    /// The messages and state notices a person sees on the page, as text (a collapsed
    /// "Details" is not seen).
    pub async fn messages(&self) -> Vec<String> {
        let v = self
            .js(r#"Array.from(document.querySelectorAll('.msg, .notice, .alert'))
                .filter((el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden')
                .map((el) => el.innerText.trim())"#)
            .await;
        serde_json::from_value(v).unwrap_or_default()
    }

    /// The browser console's errors since the last call (the log is read and emptied).
    pub async fn console_errors(&self) -> Vec<String> {
        let log: Value = reqwest::Client::new()
            .post(format!(
                "{}/session/{}/se/log",
                self.webdriver, self.session
            ))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        log["value"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Cuts the browser off the network (as a dropped connection does), or reconnects it.
    pub async fn set_offline(&self, offline: bool) {
        let url = format!(
            "{}/session/{}/chromium/network_conditions",
            self.webdriver, self.session
        );
        let http = reqwest::Client::new();
        let r = if offline {
            http.post(url)
                .json(
                    &json!({"network_conditions": {"offline": true, "latency": 0,
                    "download_throughput": 0, "upload_throughput": 0}}),
                )
                .send()
                .await
        } else {
            http.delete(url).send().await
        };
        let r = r.unwrap();
        assert!(
            r.status().is_success() || !offline,
            "network conditions: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// Waits for the popup a click opened and switches to it.
    pub async fn to_popup(&self) {
        let waited = Stopwatch::start();
        loop {
            let windows = self.client.windows().await.unwrap();
            if let Some(popup) = windows.into_iter().find(|w| *w != self.main) {
                self.client.switch_to_window(popup).await.unwrap();
                return;
            }
            if waited.elapsed() > STEP {
                panic!("no popup opened");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Back to the page, once the popup has closed itself.
    pub async fn to_main(&self) {
        let waited = Stopwatch::start();
        while self.client.windows().await.unwrap().len() > 1 {
            if waited.elapsed() > STEP {
                panic!("the popup did not close");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.client
            .switch_to_window(self.main.clone())
            .await
            .unwrap();
    }

    /// In the emulator's consent popup: picks `email` (a listed account, or typed as another
    /// one), unticks `untick`, allows, and returns to the page.
    pub async fn consent(&self, email: &str, untick: &[&str]) {
        self.to_popup().await;
        self.until("document.getElementById('allow')", "the consent page")
            .await;
        let listed = format!("input[name=account][value='{email}']");
        if self.client.find(Locator::Css(&listed)).await.is_ok() {
            self.click(&listed).await;
        } else {
            self.fill("#email-other", email).await;
        }
        for scope in untick {
            self.click(&format!("input[name=grant][value='{scope}']"))
                .await;
        }
        self.assert_accessible("the consent popup").await;
        self.click("#allow").await;
        self.to_main().await;
    }

    /// Accessibility basics: every visible control has an accessible name, and nothing is
    /// wider than the window (the page works at narrow widths).
    pub async fn assert_accessible(&self, what: &str) {
        let unlabelled = self
            .js(r#"(() => {
              const named = (el) => {
                if ((el.getAttribute('aria-label') || '').trim()) return true;
                const by = el.getAttribute('aria-labelledby');
                if (by && by.split(' ').some((id) => (document.getElementById(id)?.textContent || '').trim())) return true;
                if (el.labels && Array.from(el.labels).some((l) => l.textContent.trim())) return true;
                if (el.tagName === 'BUTTON' && el.textContent.trim()) return true;
                if (el.tagName === 'INPUT' && ['submit', 'button'].includes(el.type) && el.value.trim()) return true;
                return !!(el.getAttribute('title') || '').trim();
              };
              const visible = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
              return Array.from(document.querySelectorAll('input, select, textarea, button'))
                .filter((el) => el.type !== 'hidden' && visible(el) && !named(el))
                .map((el) => el.outerHTML.slice(0, 120));
            })()"#)
            .await;
        assert_eq!(unlabelled, json!([]), "{what}: controls without a label");
        let overflow = self
            .js("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            .await;
        assert!(
            overflow.as_i64().unwrap_or(1) <= 0,
            "{what}: the page is {overflow} px wider than the window"
        );
    }

    /// Saves the viewport as `docs/screenshots/<name>.png` when `GRANTKEEPER_SCREENSHOTS` is
    /// set (DEVELOPERS.md names the command), scrolled so that `css` is in view.
    pub async fn screenshot(&self, name: &str, css: &str) {
        if std::env::var_os("GRANTKEEPER_SCREENSHOTS").is_none() {
            return;
        }
        self.js(&format!(
            "(() => {{ const el = document.querySelector({css:?}); \
             if (el) el.scrollIntoView({{block: 'start'}}); \
             if (el && el.getBoundingClientRect().top < 80) window.scrollBy(0, -12); \
             if ({css:?} === 'body') window.scrollTo(0, 0); return true; }})()"
        ))
        .await;
        // Let relative times and transitions settle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Saves a screenshot and the page source of every open window under `dir`.
    async fn save_artifacts(&self, dir: &Path) {
        let _ = std::fs::create_dir_all(dir);
        let windows = self.client.windows().await.unwrap_or_default();
        for (i, w) in windows.into_iter().enumerate() {
            if self.client.switch_to_window(w).await.is_err() {
                continue;
            }
            if let Ok(png) = self.client.screenshot().await {
                let _ = std::fs::write(dir.join(format!("window{i}.png")), png);
            }
            if let Ok(html) = self.client.source().await {
                let _ = std::fs::write(dir.join(format!("window{i}.html")), html);
            }
        }
    }
}

/// A scenario's steps, under way.
pub type Steps<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// A scenario: its name, the viewport it starts at, and its steps.
pub struct Scenario {
    pub name: &'static str,
    pub size: (u32, u32),
    pub run: for<'a> fn(&'a Browser, &'a Dev) -> Steps<'a>,
}

/// Runs the scenarios in one `dev` and one browser (skipping all as [`Browser::open`] says),
/// each from a clean start; fails at the end naming those that failed.
pub async fn run_scenarios(scenarios: &[Scenario]) {
    let Some(browser) = Browser::open().await else {
        return;
    };
    let dev = Dev::start();
    let only: Option<Vec<String>> = std::env::var("GRANTKEEPER_BROWSER_ONLY")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    let mut failed = Vec::new();
    for scenario in scenarios {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|n| n == scenario.name))
        {
            continue;
        }
        let started = Stopwatch::start();
        let (width, height) = scenario.size;
        let outcome = AssertUnwindSafe(async {
            browser.reset(&dev.url, width, height).await;
            (scenario.run)(&browser, &dev).await;
        })
        .catch_unwind()
        .await;
        match outcome {
            Ok(()) => eprintln!(
                "browser scenario {} ok in {:.1} s",
                scenario.name,
                started.elapsed().as_secs_f64()
            ),
            Err(panic) => {
                let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .parent()
                    .unwrap_or(Path::new("target"))
                    .join("browser-artifacts")
                    .join(scenario.name);
                browser.save_artifacts(&dir).await;
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                eprintln!(
                    "browser scenario {} FAILED: {why}\nscreenshots and page sources saved in {}",
                    scenario.name,
                    dir.display()
                );
                failed.push(scenario.name);
            }
        }
    }
    let _ = browser.client.clone().close().await;
    assert!(failed.is_empty(), "browser scenarios failed: {failed:?}");
}

/// The list of scenarios, from `async fn name(b: &Browser, dev: &Dev)` items and their
/// viewport.
#[macro_export]
macro_rules! scenarios {
    ($($name:path => ($w:expr, $h:expr)),* $(,)?) => {
        vec![$(
            $crate::harness::Scenario {
                name: {
                    let path = stringify!($name);
                    match path.rfind(':') { Some(i) => path[i + 1..].trim(), None => path }
                },
                size: ($w, $h),
                run: {
                    fn run<'a>(
                        b: &'a $crate::harness::Browser,
                        d: &'a $crate::harness::Dev,
                    ) -> $crate::harness::Steps<'a> {
                        Box::pin($name(b, d))
                    }
                    run
                },
            }
        ),*]
    };
}
