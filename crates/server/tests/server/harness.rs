//! `TestApp`: the real server on port 0 beside a real emulator on port 0, on a SQLite file or a
//! PostgreSQL database of its own ([`Backend`]), typed request helpers, and log capture at
//! trace level (set GRANTKEEPER_TEST_LOG=1 to also print logs).

use grantkeeper_core::{ExposeSecret, ManualClock, MasterKey, SystemClock};
use grantkeeper_emulator::{Emulator, EmulatorOptions};
use grantkeeper_server::App;
use grantkeeper_server::config::{FileConfig, LimitsSection, Settings};
use grantkeeper_testkit::postgres::TestDatabase;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use url::Url;

pub use grantkeeper_testkit::logs::captured_logs;

/// Makes [`KMS_KEY`] and a service account in the emulator at `emulator_url`; the Cloud KMS
/// source of that key, with the account's key file written in `dir`.
pub async fn kms_source(
    emulator_url: &str,
    dir: &std::path::Path,
) -> (grantkeeper_keysource::CloudKms, PathBuf) {
    let http = reqwest::Client::new();
    let made = http
        .post(format!("{emulator_url}/_emulator/kms/keys"))
        .json(&json!({"name": KMS_KEY}))
        .send()
        .await
        .unwrap();
    assert!(made.status() == 201 || made.status() == 409);
    let file: Value = http
        .post(format!("{emulator_url}/_emulator/service-accounts"))
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let path = dir.join(format!(
        "kms-{}.json",
        file["private_key_id"].as_str().unwrap()
    ));
    std::fs::write(&path, file.to_string()).unwrap();
    let credentials =
        grantkeeper_keysource::Credentials::key_file(&path, "vault.kms_credentials_file").unwrap();
    let source = grantkeeper_keysource::CloudKms::new(
        KMS_KEY,
        emulator_url,
        credentials,
        SystemClock::shared(),
    )
    .unwrap();
    (source, path)
}

pub struct TestApp {
    pub url: String,
    pub emulator_url: String,
    pub emulator: Emulator,
    pub app: App,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    /// The server's master key (another process on its store, a rotation, needs it).
    pub master: MasterKey,
    /// The master key source the server wraps its data keys with: `master`, or a key of the
    /// emulated Cloud KMS (`Options::kms`).
    pub source: Arc<dyn grantkeeper_core::MasterKeySource>,
    /// The service account key file the Cloud KMS source uses (`Options::kms`).
    pub kms_credentials: Option<PathBuf>,
    /// The PostgreSQL database of [`Backend::Postgres`]: dropped with the app (declared last,
    /// so dropped after everything that uses it).
    pub database: Option<TestDatabase>,
}

/// The store a [`TestApp`] runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the test's directory.
    Sqlite,
    /// A migrated PostgreSQL database of the app's own, dropped with it.
    Postgres,
}

/// The Cloud KMS key of `Options::kms`.
pub const KMS_KEY: &str = "projects/test/locations/global/keyRings/grantkeeper/cryptoKeys/master";

pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    async fn from(r: reqwest::Response) -> Answer {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
            text,
        }
    }

    /// Reads an answer got by a request built by hand.
    pub async fn from_response(r: reqwest::Response) -> Answer {
        Answer::from(r).await
    }

    /// The `name=value` of the session cookie this answer set.
    pub fn session_cookie(&self) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("gk_session="))
            .map(|v| v.split(';').next().unwrap().to_owned())
    }

    /// Asserts an error answer of design.md's shape.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "status of {}", self.text);
        assert_eq!(self.body["error"], code, "error code of {}", self.text);
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "message in {}",
            self.text
        );
    }
}

/// Options of a code minted through the emulator's control API.
pub struct Code<'a> {
    pub email: &'a str,
    pub scope: &'a str,
    pub redirect_uri: &'a str,
    pub access_type: &'a str,
    pub prompt: Option<&'a str>,
    pub azp: Option<String>,
    pub client_id: Option<String>,
}

impl<'a> Code<'a> {
    pub fn web(email: &'a str) -> Self {
        Code {
            email,
            scope: "openid email profile https://www.googleapis.com/auth/drive.appdata",
            redirect_uri: "postmessage",
            access_type: "offline",
            prompt: None,
            azp: None,
            client_id: None,
        }
    }
}

pub struct Options {
    /// Extra origins allowed besides the server's own.
    pub allowed_origins: Vec<String>,
    /// Whether the emulator's Android and iOS clients are authorized parties.
    pub mobile_parties: bool,
    /// A webhook receiver URL and secret.
    pub webhook: Option<(String, String)>,
    /// Serve the demo page (`server.demo_page`).
    pub demo_page: bool,
    /// Keep the emulator's state (its keys included) under the test's directory, in
    /// `emulator/`.
    pub emulator_data_dir: bool,
    /// `[limits]`. The default turns the rate limits off, so that tests making many calls
    /// are not limited; a test of the limits sets its own.
    pub limits: LimitsSection,
    /// A client secret other than the emulator's (grantkeeper misconfigured).
    pub client_secret: Option<String>,
    /// `vault.reload_interval`, e.g. `1s` (default: the server's).
    pub keyring_reload: Option<&'static str>,
    /// Keep the master key in the emulator's Cloud KMS ([`KMS_KEY`]), reached with a service
    /// account's key file, instead of a local key.
    pub kms: bool,
    /// `store.url`; None: a SQLite file in the test's directory.
    pub store_url: Option<String>,
    /// `[jobs]` keepalive_after, keepalive_every and keepalive_poll (default: keep-alive off,
    /// so that no test refreshes more than it asks for).
    pub keepalive: Option<(&'static str, &'static str, &'static str)>,
    /// `server.session_ttl` and `server.session_purge_interval` (default: the server's).
    pub sessions: Option<(&'static str, &'static str)>,
    /// The clock of the server and the emulator (default: the system's).
    pub clock: Option<Arc<ManualClock>>,
}

/// `[limits]` with both rate limits off, everything else at its default.
pub fn no_rate_limits() -> LimitsSection {
    LimitsSection {
        authcode_per_minute: Some(0),
        v1_per_second: Some(0),
        ..LimitsSection::default()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allowed_origins: vec!["https://app.example.com".into()],
            mobile_parties: true,
            webhook: None,
            demo_page: false,
            emulator_data_dir: false,
            limits: no_rate_limits(),
            client_secret: None,
            keyring_reload: None,
            kms: false,
            store_url: None,
            keepalive: None,
            sessions: None,
            clock: None,
        }
    }
}

impl TestApp {
    pub async fn start() -> TestApp {
        Self::start_with(Options::default()).await
    }

    /// The app on `backend`; None, the check to be skipped, when PostgreSQL is not there and
    /// need not be (testkit's rule: it says `skipped`; under CI, or with
    /// `GRANTKEEPER_TEST_POSTGRES` set, a server not there fails the check instead).
    pub async fn start_on(backend: Backend, options: Options) -> Option<TestApp> {
        match backend {
            Backend::Sqlite => Some(Self::start_with(options).await),
            Backend::Postgres => {
                let database = TestDatabase::migrated().await?;
                let mut app = Self::start_with(Options {
                    store_url: Some(database.url.clone()),
                    ..options
                })
                .await;
                app.database = Some(database);
                Some(app)
            }
        }
    }

    pub async fn start_with(options: Options) -> TestApp {
        grantkeeper_testkit::logs::capture();
        let dir = tempfile::tempdir().unwrap();
        let clock: grantkeeper_core::SharedClock = match &options.clock {
            Some(manual) => manual.clone(),
            None => SystemClock::shared(),
        };

        let emulator_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let emulator_url = format!("http://{}", emulator_listener.local_addr().unwrap());
        let emulator = Emulator::open(EmulatorOptions {
            base_url: Url::parse(&emulator_url).unwrap(),
            data_dir: options.emulator_data_dir.then(|| dir.path().to_path_buf()),
            clock: clock.clone(),
            control_api: true,
        })
        .await
        .unwrap();
        tokio::spawn(axum::serve(emulator_listener, emulator.router()).into_future());

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let client = emulator.web_client();
        let mut file = FileConfig::default();
        file.server.addr = Some(listener.local_addr().unwrap().to_string());
        file.server.public_url = Some(url.clone());
        file.server.allowed_origins = options.allowed_origins;
        file.server.demo_page = Some(options.demo_page);
        file.provider.issuer = Some(emulator_url.clone());
        file.provider.client_id = Some(client.client_id.clone());
        file.provider.client_secret = Some(match options.client_secret {
            Some(wrong) => wrong.into(),
            None => client.client_secret.clone(),
        });
        file.provider.google_quirks = Some(true);
        if options.mobile_parties {
            file.provider.authorized_parties =
                vec![emulator.android_client_id(), emulator.ios_client_id()];
        }
        if let Some((url, secret)) = options.webhook {
            file.events.webhook_url = Some(url);
            file.events.webhook_secret = Some(secret.into());
        }
        file.provider.api_base = Some(emulator_url.clone());
        file.limits = options.limits;
        file.vault.reload_interval = options
            .keyring_reload
            .map(|d| grantkeeper_server::config::DurationValue::Text(d.to_owned()));
        let text = |d: &str| {
            Some(grantkeeper_server::config::DurationValue::Text(
                d.to_owned(),
            ))
        };
        if let Some((ttl, purge)) = options.sessions {
            file.server.session_ttl = text(ttl);
            file.server.session_purge_interval = text(purge);
        }
        match options.keepalive {
            Some((after, every, poll)) => {
                file.jobs.keepalive_after = text(after);
                file.jobs.keepalive_every = text(every);
                file.jobs.keepalive_poll = text(poll);
            }
            None => file.jobs.keepalive_after = text("0s"),
        }
        file.store.url = Some(
            options
                .store_url
                .unwrap_or_else(|| {
                    format!("sqlite://{}", dir.path().join("grantkeeper.db").display())
                })
                .into(),
        );
        let settings = Settings::from_file(&file, dir.path()).unwrap();
        let master = MasterKey::from_base64(&MasterKey::generate_base64()).unwrap();
        let store = grantkeeper_store::open(settings.store_url.expose_secret())
            .await
            .unwrap();
        // A short timeout so that an upstream that hangs is tested in seconds.
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let (source, kms_credentials): (Arc<dyn grantkeeper_core::MasterKeySource>, _) =
            if options.kms {
                let (source, file) = kms_source(&emulator_url, dir.path()).await;
                (Arc::new(source), Some(file))
            } else {
                (Arc::new(master.try_clone().unwrap()), None)
            };
        let app = App::with_http_client(settings, store, source.clone(), clock, http)
            .await
            .unwrap();
        // With the peer's address, which the sign-in rate limit counts by.
        tokio::spawn(
            axum::serve(
                listener,
                grantkeeper_server::http::router(app.clone())
                    .into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .into_future(),
        );
        TestApp {
            url,
            emulator_url,
            emulator,
            app,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            dir,
            master,
            source,
            kms_credentials,
            database: None,
        }
    }

    /// Calls to the emulator's Cloud KMS so far, failed ones too.
    pub async fn kms_requests(&self) -> u64 {
        self.stats().await["kms_requests"].as_u64().unwrap()
    }

    pub fn db_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Mints a code through the emulator's control API.
    pub async fn mint(&self, c: Code<'_>) -> String {
        let client_id = c
            .client_id
            .unwrap_or_else(|| self.emulator.web_client().client_id);
        let mut body = json!({
            "email": c.email, "client_id": client_id, "scope": c.scope,
            "redirect_uri": c.redirect_uri, "access_type": c.access_type,
        });
        if let Some(p) = c.prompt {
            body["prompt"] = json!(p);
        }
        if let Some(azp) = c.azp {
            body["azp"] = json!(azp);
        }
        let a = self.emulator_call("POST", "codes", Some(body)).await;
        assert_eq!(a.status, 200, "minting a code: {}", a.text);
        a.body["code"].as_str().unwrap().to_owned()
    }

    /// A web code, as Google Identity Services' popup gives it.
    pub async fn web_code(&self, email: &str) -> String {
        self.mint(Code::web(email)).await
    }

    /// A code as Android's or iOS's `serverAuthCode`: empty redirect URI, azp = the app's client.
    pub async fn mobile_code(&self, email: &str, azp: String) -> String {
        self.mint(Code {
            redirect_uri: "",
            azp: Some(azp),
            ..Code::web(email)
        })
        .await
    }

    /// An Android sign-in of `email` with a code without offline access (`openid email`):
    /// signed in, but no refresh token is held, so the grant needs consent. (Web popup codes
    /// are always offline, as Google Identity Services' are.)
    pub async fn sign_in_online(&self, email: &str) -> Answer {
        let code = self
            .mint(Code {
                access_type: "online",
                scope: "openid email",
                redirect_uri: "",
                azp: Some(self.emulator.android_client_id()),
                ..Code::web(email)
            })
            .await;
        self.authcode_android(&code).await
    }

    /// Sets the emulator's faults (`{}`: none).
    pub async fn set_faults(&self, faults: Value) {
        let set = self
            .emulator_call("PUT", "faults", Some(faults.clone()))
            .await;
        assert_eq!(set.status, 200, "{faults}: {}", set.text);
    }

    pub async fn emulator_call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let url = format!("{}/_emulator/{path}", self.emulator_url);
        let req = self.http.request(method.parse().unwrap(), url);
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        Answer::from(req.send().await.unwrap()).await
    }

    pub async fn stats(&self) -> Value {
        self.emulator_call("GET", "stats", None).await.body
    }

    /// Every token string the emulator issued to `email`.
    pub async fn issued_tokens(&self, email: &str) -> Vec<String> {
        let a = self
            .emulator_call("GET", &format!("tokens?email={email}"), None)
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        let mut out = Vec::new();
        for key in ["access_tokens", "refresh_tokens", "id_tokens"] {
            for t in a.body[key].as_array().unwrap() {
                out.push(t.as_str().unwrap().to_owned());
            }
        }
        out
    }

    /// POST /authcode with full control over the request.
    pub async fn post_authcode(
        &self,
        query: &str,
        content_type: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let mut req = self
            .http
            .post(format!("{}/authcode{query}", self.url))
            .body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in headers {
            req = req.header(*k, HeaderValue::from_str(v).unwrap());
        }
        Answer::from(req.send().await.unwrap()).await
    }

    /// The web client's call: raw code, X-Requested-With, same origin.
    pub async fn authcode_web(&self, code: &str) -> Answer {
        let origin = self.url.clone();
        self.post_authcode(
            "",
            Some("application/octet-stream"),
            &[("x-requested-with", "XmlHttpRequest"), ("origin", &origin)],
            code.as_bytes().to_vec(),
        )
        .await
    }

    /// Android's call: form field authCode, no Origin.
    pub async fn authcode_android(&self, code: &str) -> Answer {
        let body = serde_urlencoded::to_string([("authCode", code)]).unwrap();
        self.post_authcode(
            "",
            Some("application/x-www-form-urlencoded"),
            &[("x-requested-with", "com.example.app")],
            body.into_bytes(),
        )
        .await
    }

    /// iOS's call: JSON with platform.
    pub async fn authcode_ios(&self, code: &str) -> Answer {
        let body = json!({"code": code, "platform": "ios"}).to_string();
        self.post_authcode(
            "",
            Some("application/json"),
            &[("x-requested-with", "XMLHttpRequest")],
            body.into_bytes(),
        )
        .await
    }

    pub async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut req = self.http.get(format!("{}{path}", self.url));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        Answer::from(req.send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, cookie: Option<&str>, headers: &[(&str, &str)]) -> Answer {
        let mut req = self.http.post(format!("{}{path}", self.url));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Answer::from(req.send().await.unwrap()).await
    }

    /// Creates an API key with these scopes; returns its secret.
    pub async fn api_key(&self, scopes: &[grantkeeper_server::apikeys::KeyScope]) -> String {
        let (_, secret) = grantkeeper_server::apikeys::create_api_key(
            self.app.store().as_ref(),
            self.app.clock().as_ref(),
            "test",
            scopes,
        )
        .await
        .unwrap();
        secret.expose_secret().to_owned()
    }

    /// A /v1 call with an API key.
    pub async fn v1(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Answer::from(req.send().await.unwrap()).await
    }

    /// Signs a user in on the web and returns their sub.
    pub async fn signed_in(&self, email: &str) -> String {
        let a = self.authcode_web(&self.web_code(email).await).await;
        assert_eq!(a.status, 200, "{}", a.text);
        a.body["user"]["sub"].as_str().unwrap().to_owned()
    }

    /// Opens the user's held refresh token through the app's vault.
    pub async fn held_refresh_token(&self, sub: &str) -> Option<String> {
        let (_, grant) = self.app.store().user(sub).await.unwrap()?;
        let sealed = grant.refresh_token?;
        let opened = self
            .app
            .vault()
            .open_secret(&sealed.sealed, grantkeeper_core::Aad::refresh_token(sub))
            .unwrap();
        Some(opened.expose_secret().to_owned())
    }
}
