//! A `grantkeeper dev` process, a headless Chromium behind chromedriver, and the steps tests
//! take in them.

use fantoccini::wd::WindowHandle;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{Value, json};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_grantkeeper");

/// How long a step may take before the test fails (popups, refreshes, page loads).
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
    /// Opens a browser window of `width` x `height`; None (after saying why) when Chromium or
    /// its driver is not installed and this is not CI.
    pub async fn open(width: u32, height: u32) -> Option<Browser> {
        let driver = find_program("GRANTKEEPER_CHROMEDRIVER", &["chromedriver"]);
        let chromium = find_program(
            "GRANTKEEPER_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        let (Some(driver), Some(chromium)) = (driver, chromium) else {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
                );
            }
            eprintln!("skipped: chromium or chromedriver not found");
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
        let deadline = Instant::now() + STEP;
        loop {
            let ready = reqwest::get(format!("{webdriver}/status"))
                .await
                .ok()
                .filter(|r| r.status().is_success());
            if ready.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = driver.kill();
                panic!("chromedriver did not start");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.push(format!("--window-size={width},{height}"));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({"binary": chromium, "args": args}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&webdriver)
            .await
            .unwrap();
        // Headless Chromium may ignore --window-size for the viewport: set it explicitly.
        client.set_window_size(width, height).await.unwrap();
        let main = client.window().await.unwrap();
        Some(Browser {
            client,
            driver,
            main,
            _profile: profile,
        })
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

    /// Waits until `expr` is true in the page; fails with `what` and the page's status text.
    pub async fn until(&self, expr: &str, what: &str) {
        let deadline = Instant::now() + STEP;
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
            if Instant::now() > deadline {
                let status = self
                    .js("document.getElementById('status') ? document.getElementById('status').textContent : ''")
                    .await;
                panic!("timed out waiting for {what} (`{expr}`); status: {status}");
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

    /// Waits for the popup a click opened and switches to it.
    pub async fn to_popup(&self) {
        let deadline = Instant::now() + STEP;
        loop {
            let windows = self.client.windows().await.unwrap();
            if let Some(popup) = windows.into_iter().find(|w| *w != self.main) {
                self.client.switch_to_window(popup).await.unwrap();
                return;
            }
            if Instant::now() > deadline {
                panic!("no popup opened");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Back to the page, once the popup has closed itself.
    pub async fn to_main(&self) {
        let deadline = Instant::now() + STEP;
        while self.client.windows().await.unwrap().len() > 1 {
            if Instant::now() > deadline {
                panic!("the popup did not close");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.client
            .switch_to_window(self.main.clone())
            .await
            .unwrap();
    }

    /// In the emulator's consent popup: picks `email`, unticks `untick`, allows, and returns
    /// to the page.
    pub async fn consent(&self, email: &str, untick: &[&str]) {
        self.to_popup().await;
        self.click(&format!("input[name=account][value='{email}']"))
            .await;
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

/// Runs `body` in a fresh browser (skipping as [`Browser::open`] says); on a failure saves
/// what every window showed under `target/browser-artifacts/<name>/`, then fails.
pub async fn with_browser<F, Fut>(name: &str, width: u32, height: u32, body: F)
where
    F: FnOnce(Arc<Browser>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(browser) = Browser::open(width, height).await else {
        return;
    };
    let browser = Arc::new(browser);
    let outcome = AssertUnwindSafe(body(browser.clone())).catch_unwind().await;
    if outcome.is_err() {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap_or(Path::new("target"))
            .join("browser-artifacts")
            .join(name);
        browser.save_artifacts(&dir).await;
        eprintln!("screenshots and page sources saved in {}", dir.display());
    }
    let _ = browser.client.clone().close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
