//! A real emulator on 127.0.0.1:0, its control API, and providers pointed at it.

use grantkeeper_core::{ExposeSecret, ManualClock, SecretString, SharedClock};
use grantkeeper_emulator::{Emulator, EmulatorOptions};
use grantkeeper_provider::{Provider, ProviderSettings, TokenResponse};
use serde_json::{Value, json};
use std::fmt::{Debug, Display};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use url::Url;

pub const SCOPES: &str = "openid email profile https://www.googleapis.com/auth/drive.appdata";

/// One emulator, serving until dropped, with a clock the test moves (the emulator and every
/// provider built here share it).
pub struct Env {
    pub emulator: Emulator,
    pub base: Url,
    pub clock: Arc<ManualClock>,
    pub http: reqwest::Client,
    server: JoinHandle<()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The HTTP client as grantkeeper's server builds it: timeouts, no redirects.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

impl Env {
    /// The emulator at the root of its port.
    pub async fn start() -> Env {
        Self::start_at("").await
    }

    /// The emulator mounted under `prefix` (e.g. `/_google`, as `grantkeeper dev` mounts it).
    pub async fn start_at(prefix: &str) -> Env {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = Url::parse(&format!("http://{addr}{prefix}")).unwrap();
        let clock = ManualClock::new();
        let shared: SharedClock = clock.clone();
        let emulator = Emulator::open(EmulatorOptions {
            base_url: base.clone(),
            data_dir: None,
            clock: shared,
            control_api: true,
        })
        .await
        .unwrap();
        let app = if prefix.is_empty() {
            emulator.router()
        } else {
            axum::Router::new().nest(prefix, emulator.router())
        };
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Env {
            emulator,
            base,
            clock,
            http: http_client(),
            server,
        }
    }

    /// Settings for the emulator's web client, with the Android and iOS clients authorized.
    pub fn settings(&self) -> ProviderSettings {
        let web = self.emulator.web_client();
        let mut s = ProviderSettings::new(self.base.clone(), web.client_id, web.client_secret);
        s.authorized_parties = vec![
            self.emulator.android_client_id(),
            self.emulator.ios_client_id(),
        ];
        s
    }

    pub fn provider(&self) -> Provider {
        self.provider_with(|_| {})
    }

    pub fn provider_with(&self, change: impl FnOnce(&mut ProviderSettings)) -> Provider {
        let mut settings = self.settings();
        change(&mut settings);
        let clock: SharedClock = self.clock.clone();
        Provider::new(settings, self.http.clone(), clock)
    }

    pub fn web_client_id(&self) -> String {
        self.emulator.web_client().client_id
    }

    /// Moves the shared clock.
    pub fn advance(&self, secs: i64) {
        self.clock.advance(time::Duration::seconds(secs));
    }

    fn control(&self, path: &str) -> String {
        format!(
            "{}/_emulator/{path}",
            self.base.as_str().trim_end_matches('/')
        )
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, self.control(path));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        assert!(status.is_success(), "control {path}: {status} {text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        }
    }

    /// Mints a code as the consent page would, for the web client.
    pub async fn mint_code(&self, body: Value) -> SecretString {
        let v = self.call(reqwest::Method::POST, "codes", Some(body)).await;
        SecretString::from(v["code"].as_str().expect("a code").to_owned())
    }

    /// A GIS popup code: exchanged with `postmessage`.
    pub async fn web_code(&self, email: &str) -> SecretString {
        self.mint_code(json!({
            "email": email,
            "client_id": self.web_client_id(),
            "scope": SCOPES,
            "redirect_uri": "postmessage",
            "access_type": "offline",
            "prompt": "consent",
        }))
        .await
    }

    /// A `serverAuthCode` minted on a native client: exchanged with an empty redirect URI,
    /// its ID token has `azp` = the native client.
    pub async fn native_code(&self, email: &str, azp: &str) -> SecretString {
        self.mint_code(json!({
            "email": email,
            "client_id": self.web_client_id(),
            "scope": SCOPES,
            "redirect_uri": "",
            "access_type": "offline",
            "prompt": "consent",
            "azp": azp,
        }))
        .await
    }

    pub async fn faults(&self, faults: Value) {
        self.call(reqwest::Method::PUT, "faults", Some(faults))
            .await;
    }

    pub async fn emulator_settings(&self, settings: Value) {
        self.call(reqwest::Method::PUT, "settings", Some(settings))
            .await;
    }

    pub async fn rotate_keys(&self) {
        self.call(reqwest::Method::POST, "keys/rotate", None).await;
    }

    pub async fn revoke_user(&self, email: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("users/{email}/revoke"),
            None,
        )
        .await;
    }

    pub async fn stats(&self) -> Value {
        self.call(reqwest::Method::GET, "stats", None).await
    }

    /// Signs `email` in on the web and returns the token answer.
    pub async fn sign_in(&self, provider: &Provider, email: &str) -> TokenResponse {
        let code = self.web_code(email).await;
        provider.exchange_code(&code, "postmessage").await.unwrap()
    }

    /// A fresh ID token for `email`, as the token endpoint returns it.
    pub async fn id_token(&self, provider: &Provider, email: &str) -> SecretString {
        self.sign_in(provider, email)
            .await
            .id_token
            .expect("an identity scope was granted")
    }
}

/// Every secret-bearing string the test saw, to check messages against.
#[derive(Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    pub fn add(&mut self, s: &SecretString) {
        self.0.push(s.expose_secret().to_owned());
    }

    pub fn add_response(&mut self, t: &TokenResponse) {
        self.add(&t.access_token);
        if let Some(r) = &t.refresh_token {
            self.add(r);
        }
        if let Some(i) = &t.id_token {
            self.add(i);
            // Each part of a JWT, too: a message quoting the payload leaks the user.
            for part in i.expose_secret().split('.') {
                self.0.push(part.to_owned());
            }
        }
    }

    /// Fails when `Display` or `Debug` of `value` shows any of them.
    pub fn assert_absent(&self, value: &(impl Debug + Display)) {
        let shown = format!("{value} | {value:?}");
        for secret in &self.0 {
            assert!(
                secret.len() < 8 || !shown.contains(secret.as_str()),
                "a secret leaked into: {shown}"
            );
        }
    }

    pub fn assert_absent_debug(&self, value: &impl Debug) {
        let shown = format!("{value:?}");
        for secret in &self.0 {
            assert!(
                secret.len() < 8 || !shown.contains(secret.as_str()),
                "a secret leaked into: {shown}"
            );
        }
    }
}
