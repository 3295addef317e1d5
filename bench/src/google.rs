//! The Google emulator, run inside the bench process on 127.0.0.1, and its control API: codes
//! minted as if users had consented, settings, injected faults, counters.

use anyhow::Context;
use grantkeeper_core::{ExposeSecret, SystemClock};
use grantkeeper_emulator::{Emulator, EmulatorOptions};
use serde_json::{Value, json};
use std::path::Path;
use tokio::net::TcpListener;
use url::Url;

/// The scopes every bench user grants.
pub const SCOPES: &str = "openid email https://www.googleapis.com/auth/drive.appdata";

pub struct Google {
    pub emulator: Emulator,
    /// e.g. `http://127.0.0.1:41234`, also the issuer.
    pub base: String,
    pub client_id: String,
    http: reqwest::Client,
}

impl Google {
    /// Binds a free port on 127.0.0.1 and serves the emulator (state in memory) from this
    /// process's runtime.
    pub async fn start() -> anyhow::Result<Google> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let emulator = Emulator::open(EmulatorOptions {
            base_url: Url::parse(&base)?,
            data_dir: None,
            clock: SystemClock::shared(),
            control_api: true,
        })
        .await?;
        tokio::spawn(axum::serve(listener, emulator.router()).into_future());
        let client_id = emulator.web_client().client_id;
        Ok(Google {
            emulator,
            base,
            client_id,
            http: reqwest::Client::new(),
        })
    }

    /// The web client's secret in the format of Google's console, written with mode 0600.
    pub fn write_client_secret(&self, path: &Path) -> anyhow::Result<()> {
        crate::server::write_private(
            path,
            &serde_json::to_vec(&self.emulator.client_secret_json())?,
        )
    }

    /// The form body of an authorization-code exchange at the token endpoint, as grantkeeper
    /// sends it for a web code.
    pub fn token_form(&self, code: &str) -> anyhow::Result<String> {
        let client = self.emulator.web_client();
        Ok(serde_urlencoded::to_string([
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", "postmessage"),
            ("client_id", client.client_id.as_str()),
            ("client_secret", client.client_secret.expose_secret()),
        ])?)
    }

    /// One code for `email`, as the consent page would give it to a web client.
    pub async fn mint_code(&self, email: &str) -> anyhow::Result<String> {
        let answer = self
            .control(
                "POST",
                "codes",
                json!({"email": email, "client_id": self.client_id, "scope": SCOPES,
                       "redirect_uri": "postmessage", "access_type": "offline"}),
            )
            .await?;
        Ok(answer["code"]
            .as_str()
            .context("no code minted")?
            .to_owned())
    }

    /// Codes for `n` new users `{prefix}{i}@bench.example`, minted 64 at a time.
    pub async fn mint_codes(&self, prefix: &str, n: usize) -> anyhow::Result<Vec<String>> {
        let google = std::sync::Arc::new(self.clone_handle());
        let mut codes = vec![String::new(); n];
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n {
            let google = google.clone();
            let email = format!("{prefix}{i}@bench.example");
            tasks.spawn(async move { (i, google.mint_code(&email).await) });
            while tasks.len() >= 64 {
                if let Some(done) = tasks.join_next().await {
                    let (i, code) = done?;
                    codes[i] = code?;
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            let (i, code) = done?;
            codes[i] = code?;
        }
        Ok(codes)
    }

    fn clone_handle(&self) -> Google {
        Google {
            emulator: self.emulator.clone(),
            base: self.base.clone(),
            client_id: self.client_id.clone(),
            http: self.http.clone(),
        }
    }

    /// A call to the control API (`{base}/_emulator/{path}`); its JSON answer.
    pub async fn control(&self, method: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.parse()?, format!("{}/_emulator/{path}", self.base));
        if !body.is_null() {
            request = request.json(&body);
        }
        let answer = request.send().await?;
        let status = answer.status();
        let text = answer.text().await?;
        anyhow::ensure!(
            status.is_success(),
            "the emulator answered {status} to {method} {path}: {text}"
        );
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A counter of `GET /_emulator/stats` (`refreshes`, `code_exchanges`, ...).
    pub async fn stat(&self, name: &str) -> anyhow::Result<u64> {
        let stats = self.control("GET", "stats", Value::Null).await?;
        stats[name]
            .as_u64()
            .with_context(|| format!("the emulator's stats lack {name}"))
    }
}

/// grantkeeper's server assembled in this process, as `serve` assembles it, on a SQLite store
/// in `dir`, pointed at the emulator.
pub async fn in_process_app(
    google: &Google,
    dir: &Path,
    refresh_concurrency: usize,
) -> anyhow::Result<grantkeeper_server::App> {
    use grantkeeper_core::MasterKey;
    use grantkeeper_server::config::{FileConfig, Settings};
    let client = google.emulator.web_client();
    let mut file = FileConfig::default();
    file.provider.issuer = Some(google.base.clone());
    file.provider.client_id = Some(client.client_id.clone());
    file.provider.client_secret = Some(client.client_secret.clone());
    file.provider.api_base = Some(google.base.clone());
    file.broker.refresh_concurrency = Some(refresh_concurrency);
    file.store.url = Some(format!("sqlite://{}", dir.join("bench.db").display()).into());
    let settings = Settings::from_file(&file, dir)?;
    let store = grantkeeper_store::open(settings.store_url.expose_secret()).await?;
    let master = MasterKey::from_base64(&MasterKey::generate_base64())?;
    Ok(grantkeeper_server::App::new(
        settings,
        store,
        std::sync::Arc::new(master),
        SystemClock::shared(),
    )
    .await?)
}
