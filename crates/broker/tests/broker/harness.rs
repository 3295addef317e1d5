//! `Env`: an emulator on port 0, a store (a SQLite file in a temp dir, or a PostgreSQL
//! database of its own), a vault with a random key, a provider client and a manual clock
//! shared by all of them; sign-in done the way the server does it (exchange, seal, record),
//! and typed helpers for the emulator's control API. `open_store` opens the same database
//! again, as another instance would. Logs of every test are captured at trace level
//! (GRANTKEEPER_TEST_LOG=1 also prints them).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use grantkeeper_broker::{Broker, BrokerSettings};
use grantkeeper_core::{
    Aad, ExposeSecret, KeyId, ManualClock, SecretString, SharedClock, UserProfile, Vault,
    VaultHandle, fingerprint,
};
use grantkeeper_emulator::{Emulator, EmulatorOptions};
use grantkeeper_provider::{Provider, ProviderSettings};
use grantkeeper_store::{
    GrantEvent, GrantRecord, SealedAccessToken, SealedRefreshToken, SharedStore, SignIn,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use url::Url;

pub const ALL_SCOPES: &str = "openid email profile https://www.googleapis.com/auth/drive.appdata";
pub const DRIVE_APPDATA: &str = "https://www.googleapis.com/auth/drive.appdata";

pub use grantkeeper_testkit::logs::captured_logs;

pub struct Env {
    pub emulator_url: String,
    pub emulator: Emulator,
    pub clock: Arc<ManualClock>,
    pub store: SharedStore,
    /// Where `store` lives; `open_store` opens it again.
    pub store_url: String,
    pub vault: VaultHandle,
    pub provider: Provider,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
    /// Keeps the PostgreSQL database until the check ends.
    _database: Option<super::postgres::TestDatabase>,
}

/// A code minted through the control API.
pub struct Code<'a> {
    pub email: &'a str,
    pub scope: &'a str,
    pub prompt: Option<&'a str>,
    /// Native (Android) code asking for online access only: no refresh token.
    pub online_native: bool,
}

impl<'a> Code<'a> {
    pub fn web(email: &'a str) -> Self {
        Code {
            email,
            scope: ALL_SCOPES,
            prompt: None,
            online_native: false,
        }
    }
}

impl Env {
    /// With a SQLite file.
    pub async fn start() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("grantkeeper.db").display());
        Env::start_on(url, dir, None).await
    }

    /// With a PostgreSQL database of its own; None when the checks on PostgreSQL are skipped.
    pub async fn start_postgres() -> Option<Env> {
        let database = super::postgres::TestDatabase::migrated().await?;
        let url = database.url.clone();
        Some(Env::start_on(url, tempfile::tempdir().unwrap(), Some(database)).await)
    }

    async fn start_on(
        store_url: String,
        dir: tempfile::TempDir,
        database: Option<super::postgres::TestDatabase>,
    ) -> Env {
        grantkeeper_testkit::logs::capture();
        let clock = ManualClock::new();
        let shared: SharedClock = clock.clone();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let emulator_url = format!("http://{}", listener.local_addr().unwrap());
        let emulator = Emulator::open(EmulatorOptions {
            base_url: Url::parse(&emulator_url).unwrap(),
            data_dir: None,
            clock: shared.clone(),
            control_api: true,
        })
        .await
        .unwrap();
        tokio::spawn(axum::serve(listener, emulator.router()).into_future());

        let store = grantkeeper_store::open(&store_url).await.unwrap();

        let mut vault = Vault::new();
        vault
            .add_key(KeyId(1), &grantkeeper_core::random::bytes::<32>())
            .unwrap();
        vault.set_active(KeyId(1)).unwrap();

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let client = emulator.web_client();
        let provider = Provider::new(
            ProviderSettings::new(
                Url::parse(&emulator_url).unwrap(),
                client.client_id,
                client.client_secret,
            ),
            http.clone(),
            shared,
        );
        Env {
            emulator_url,
            emulator,
            clock,
            store,
            store_url,
            vault: VaultHandle::new(vault),
            provider,
            http,
            _dir: dir,
            _database: database,
        }
    }

    /// The same database opened again, as another instance (another process) opens it.
    pub async fn open_store(&self) -> SharedStore {
        grantkeeper_store::open(&self.store_url).await.unwrap()
    }

    /// A broker of another instance: its own store connections, the same database.
    pub fn broker_on(&self, store: SharedStore) -> Broker {
        Broker::new(
            store,
            self.provider.clone(),
            self.vault.clone(),
            self.shared_clock(),
            BrokerSettings::default(),
        )
    }

    /// Signs in `emails`, a few at a time; their subs in the same order.
    pub async fn sign_in_all(&self, emails: &[String]) -> Vec<String> {
        use futures_util::StreamExt;
        futures_util::stream::iter(emails.iter().map(|e| self.sign_in(e)))
            .buffered(8)
            .collect()
            .await
    }

    pub fn now(&self) -> time::OffsetDateTime {
        grantkeeper_core::Clock::now(&*self.clock)
    }

    pub fn shared_clock(&self) -> SharedClock {
        self.clock.clone()
    }

    pub fn broker(&self) -> Broker {
        self.broker_with(BrokerSettings::default())
    }

    pub fn broker_with(&self, settings: BrokerSettings) -> Broker {
        self.broker_for(self.provider.clone(), settings)
    }

    pub fn broker_for(&self, provider: Provider, settings: BrokerSettings) -> Broker {
        Broker::new(
            self.store.clone(),
            provider,
            self.vault.clone(),
            self.shared_clock(),
            settings,
        )
    }

    /// A provider client of the same emulator authenticating with another client secret.
    pub fn provider_with_secret(&self, secret: &str) -> Provider {
        Provider::new(
            ProviderSettings::new(
                Url::parse(&self.emulator_url).unwrap(),
                self.emulator.web_client().client_id,
                SecretString::from(secret.to_owned()),
            ),
            self.http.clone(),
            self.shared_clock(),
        )
    }

    pub fn control(&self, path: &str) -> String {
        format!("{}/_emulator/{path}", self.emulator_url)
    }

    pub async fn mint_code(&self, code: &Code<'_>) -> String {
        let mut body = json!({"email": code.email, "scope": code.scope});
        if code.online_native {
            body["azp"] = json!(self.emulator.android_client_id());
            body["access_type"] = json!("online");
        } else {
            body["client_id"] = json!(self.emulator.web_client().client_id);
            body["redirect_uri"] = json!("postmessage");
            body["access_type"] = json!("offline");
        }
        if let Some(prompt) = code.prompt {
            body["prompt"] = json!(prompt);
        }
        let r = self
            .http
            .post(self.control("codes"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
        let v: Value = r.json().await.unwrap();
        v["code"].as_str().unwrap().to_owned()
    }

    /// What sign-in does: exchange, seal, record. The ID token is only read for `sub` (the
    /// broker does not care whether it was verified). Returns the user's `sub`.
    pub async fn sign_in_with(&self, code: Code<'_>) -> String {
        let secret = SecretString::from(self.mint_code(&code).await);
        let redirect_uri = if code.online_native {
            ""
        } else {
            "postmessage"
        };
        let tokens = self
            .provider
            .exchange_code(&secret, redirect_uri)
            .await
            .unwrap();
        let id_token = tokens.id_token.as_ref().unwrap().expose_secret().to_owned();
        let payload = id_token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let sub = claims["sub"].as_str().unwrap().to_owned();
        let vault = self.vault.get();
        let refresh_token = tokens.refresh_token.as_ref().map(|rt| SealedRefreshToken {
            sealed: vault.seal_secret(rt, Aad::refresh_token(&sub)).unwrap(),
            fingerprint: fingerprint(rt),
        });
        let access_token = SealedAccessToken {
            sealed: vault
                .seal_secret(&tokens.access_token, Aad::access_token(&sub))
                .unwrap(),
            expires_at: tokens.expires_at(),
        };
        self.store
            .record_sign_in(SignIn {
                profile: UserProfile {
                    sub: sub.clone(),
                    email: Some(code.email.to_owned()),
                    email_verified: true,
                    ..UserProfile::default()
                },
                granted_scopes: tokens.scope.clone(),
                refresh_token,
                access_token: Some(access_token),
                at: self.now(),
                session: None,
            })
            .await
            .unwrap();
        sub
    }

    pub async fn sign_in(&self, email: &str) -> String {
        self.sign_in_with(Code::web(email)).await
    }

    pub async fn grant(&self, sub: &str) -> GrantRecord {
        self.store.grant(sub).await.unwrap().unwrap()
    }

    pub async fn events(&self, sub: &str) -> Vec<GrantEvent> {
        self.store.grant_events(sub).await.unwrap()
    }

    /// Moves every clock (the emulator's, the broker's, the store's times) forward.
    pub fn advance(&self, secs: i64) {
        self.clock.advance(time::Duration::seconds(secs));
    }

    pub async fn stats(&self) -> Value {
        self.http
            .get(self.control("stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn refreshes(&self) -> u64 {
        self.stats().await["refreshes"].as_u64().unwrap()
    }

    pub async fn token_requests(&self) -> u64 {
        self.stats().await["token_requests"].as_u64().unwrap()
    }

    pub async fn refreshes_of(&self, email: &str) -> u64 {
        self.stats().await["refreshes_by_email"][email]
            .as_u64()
            .unwrap_or(0)
    }

    async fn put(&self, path: &str, body: Value) {
        let r = self
            .http
            .put(self.control(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {:?}", r.text().await);
    }

    pub async fn settings(&self, body: Value) {
        self.put("settings", body).await;
    }

    pub async fn faults(&self, body: Value) {
        self.put("faults", body).await;
    }

    /// Revokes every grant of the user at the emulator, as a password change does.
    pub async fn revoke_at_google(&self, email: &str) {
        let r = self
            .http
            .post(self.control(&format!("users/{email}/revoke")))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }

    /// Every token the emulator issued to the user.
    pub async fn issued_tokens(&self, email: &str) -> Vec<String> {
        let v: Value = self
            .http
            .get(self.control("tokens"))
            .query(&[("email", email)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ["access_tokens", "refresh_tokens", "id_tokens"]
            .iter()
            .flat_map(|k| v[*k].as_array().cloned().unwrap_or_default())
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    }

    /// The refresh tokens the emulator issued to the user, oldest first.
    pub async fn issued_refresh_tokens(&self, email: &str) -> Vec<String> {
        let v: Value = self
            .http
            .get(self.control("tokens"))
            .query(&[("email", email)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["refresh_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    }

    /// The persisted access token, opened.
    pub fn open_access(&self, grant: &GrantRecord) -> Option<String> {
        grant.access_token.as_ref().map(|a| {
            self.vault
                .get()
                .open_secret(&a.sealed, Aad::access_token(&grant.sub))
                .unwrap()
                .expose_secret()
                .to_owned()
        })
    }

    /// Seconds until the persisted access token expires.
    pub fn persisted_left(&self, grant: &GrantRecord) -> i64 {
        (grant.access_token.as_ref().unwrap().expires_at - self.now()).whole_seconds()
    }
}

pub fn email(n: usize) -> String {
    format!("user{n:03}@example.com")
}
