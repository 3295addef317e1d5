//! A Google stand-in for grantkeeper's development, tests and benchmarks: the OAuth 2.0 and
//! OpenID Connect endpoints of `accounts.google.com` / `oauth2.googleapis.com` with the quirks
//! grantkeeper's protocol reference records: `postmessage` and empty redirect
//! URIs, refresh tokens only on first offline consent and never rotated, the 100-token cap,
//! whole-grant revocation, RS256 ID tokens with Google's `aud`/`azp` rules, rotating JWKS with
//! cache headers, and Cross-Account Protection (RISC) security events. Also the Google Drive
//! v3 `files` endpoints an app keeping data in its appDataFolder calls, with Google's scope
//! rules and error envelope. And the Google Cloud side of a master key kept in Cloud KMS: the
//! `encrypt` and `decrypt` calls with key versions and CRC32C integrity fields, service
//! accounts' signed-JWT grant, and the metadata server's tokens.
//!
//! Owns: its project's clients, keys, users, codes and tokens (hashes only, journaled under
//! `DIR/emulator/`), each user's Drive files, a server-rendered consent page, the Google
//! Identity Services code-model script apps load from `/gsi/client`, its Cloud KMS keys and
//! service accounts, and a control API under `/_emulator/` for tests (mint codes, revoke
//! users, rotate keys, inject faults, move its clock, read stats and Drive files, create KMS
//! keys and service accounts, disable key versions, deny accounts).
//!
//! Leaves to others: binding a listener (the caller serves [`Emulator::router`] at its base
//! URL) and everything grantkeeper itself does with the tokens.
// Indexing that may panic is refused outside tests (`get`, patterns, `split_at_checked`); not in
// [workspace.lints], which would reach the helpers of the integration tests too.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod clients;
mod consent;
mod control;
mod discovery;
mod drive;
mod echo;
mod error;
mod gsi;
mod guard;
mod iam;
mod jwt;
mod keys;
mod kms;
mod oauth;
mod risc;
mod settings;
mod state;
mod users;
mod util;

pub use clients::OAuthClient;

use crate::clients::Clients;
use crate::keys::{KeyRing, SigningKey};
use crate::settings::{Endpoint, Failure, FaultBody, Faults, Settings};
use crate::state::State;
use crate::util::{lock, read};
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use grantkeeper_core::{SecretString, SharedClock};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use url::Url;

/// How an [`Emulator`] is set up.
pub struct EmulatorOptions {
    /// The issuer and base of every endpoint, e.g. `http://127.0.0.1:41234` or
    /// `http://127.0.0.1:8080/_google` (a trailing slash is ignored).
    pub base_url: Url,
    /// `None` keeps everything in memory. `Some(DIR)` keeps state under `DIR/emulator/` and
    /// writes `DIR/client_secret.json`.
    pub data_dir: Option<PathBuf>,
    pub clock: SharedClock,
    /// Mounts the control API at `/_emulator/`.
    pub control_api: bool,
}

/// The running emulator; cheap to clone.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("base_url", &self.inner.base)
            .field("persistent", &self.inner.state_dir.is_some())
            .finish()
    }
}

/// The tokens issued to one user by this process, for `GET /_emulator/tokens` (memory only,
/// bounded per user).
#[derive(Default)]
pub(crate) struct IssuedLog {
    pub(crate) access: VecDeque<SecretString>,
    pub(crate) refresh: VecDeque<SecretString>,
    pub(crate) id: VecDeque<SecretString>,
}

/// How many tokens of each kind the log keeps per user.
const ISSUED_LOG_LEN: usize = 256;

#[derive(Clone, Copy)]
pub(crate) enum TokenKind {
    Access,
    Refresh,
    Id,
}

pub(crate) struct Inner {
    /// `base_url` without a trailing slash: the issuer and the prefix of every endpoint.
    pub(crate) base: String,
    pub(crate) base_origin: String,
    pub(crate) clock: SharedClock,
    pub(crate) data_dir: Option<PathBuf>,
    pub(crate) state_dir: Option<PathBuf>,
    pub(crate) control_api: bool,
    pub(crate) clients: RwLock<Clients>,
    pub(crate) keys: RwLock<KeyRing>,
    pub(crate) risc_key: tokio::sync::OnceCell<Arc<SigningKey>>,
    /// A key nobody publishes, for the `unknown_kid` tampering.
    pub(crate) rogue_key: tokio::sync::OnceCell<Arc<SigningKey>>,
    pub(crate) state: Mutex<State>,
    /// Service accounts (Cloud KMS's callers) and the tokens issued to them.
    pub(crate) accounts: Mutex<iam::Accounts>,
    /// Cloud KMS keys.
    pub(crate) kms: Mutex<kms::Kms>,
    /// Every call to a Cloud KMS endpoint, answered or not.
    pub(crate) kms_requests: AtomicU64,
    pub(crate) settings: RwLock<Settings>,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) issued: Mutex<HashMap<String, IssuedLog>>,
    pub(crate) token_requests: AtomicU64,
    /// Every call to a Drive endpoint, answered or not.
    pub(crate) drive_requests: AtomicU64,
    pub(crate) http: reqwest::Client,
    pub(crate) base_url: Url,
    /// The one receiver security events are delivered to, when the deployment beside the
    /// emulator named it ([`Emulator::deliver_security_events_only_to`]); else loopback ones.
    pub(crate) risc_receiver: OnceLock<Url>,
    /// The control API answers requests addressed to any host, not only loopback ones
    /// ([`Emulator::expose_control_api`]).
    pub(crate) control_any_host: AtomicBool,
}

impl Emulator {
    /// Opens (or creates) the emulator's project, keys and state. The caller has bound its
    /// listener already, so `base_url` carries the real port.
    pub async fn open(opts: EmulatorOptions) -> anyhow::Result<Emulator> {
        let base_url = opts.base_url;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.host_str().is_none() {
            anyhow::bail!("the emulator's base URL must be an http(s) URL with a host");
        }
        if base_url.query().is_some() || base_url.fragment().is_some() {
            anyhow::bail!("the emulator's base URL must not have a query or fragment");
        }
        let base = base_url.as_str().trim_end_matches('/').to_owned();
        let base_origin = util::origin_of(&base_url);
        let state_dir = opts.data_dir.as_ref().map(|d| d.join("emulator"));
        let now_dt = opts.clock.now();

        // File I/O, journal replay and RSA key generation stay off the async worker threads.
        let dir = state_dir.clone();
        let (clients, keys, state, risc, accounts, kms) = tokio::task::spawn_blocking(move || {
            if let Some(d) = &dir {
                std::fs::create_dir_all(d)?;
            }
            let clients = Clients::open(dir.as_deref())?;
            let keys = KeyRing::open(dir.as_deref(), now_dt)?;
            let state = State::open(dir.as_deref(), now_dt.unix_timestamp())?;
            let risc = match &dir {
                Some(d) if d.join("keys").join("risc.pem").exists() => {
                    Some(Arc::new(keys::risc_key(Some(d))?))
                }
                _ => None,
            };
            let accounts = iam::Accounts::open(dir.as_deref())?;
            let kms = kms::Kms::open(dir.as_deref())?;
            anyhow::Ok((clients, keys, state, risc, accounts, kms))
        })
        .await??;

        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(10))
            .build()?;
        let inner = Inner {
            base,
            base_origin,
            clock: opts.clock,
            data_dir: opts.data_dir,
            state_dir,
            control_api: opts.control_api,
            clients: RwLock::new(clients),
            keys: RwLock::new(keys),
            risc_key: tokio::sync::OnceCell::new_with(risc),
            rogue_key: tokio::sync::OnceCell::new(),
            state: Mutex::new(state),
            accounts: Mutex::new(accounts),
            kms: Mutex::new(kms),
            kms_requests: AtomicU64::new(0),
            settings: RwLock::new(Settings::default()),
            faults: Mutex::new(Faults::default()),
            issued: Mutex::new(HashMap::new()),
            token_requests: AtomicU64::new(0),
            drive_requests: AtomicU64::new(0),
            http,
            base_url,
            risc_receiver: OnceLock::new(),
            control_any_host: AtomicBool::new(false),
        };
        let emulator = Emulator {
            inner: Arc::new(inner),
        };
        if let Some(dir) = &emulator.inner.data_dir {
            let json = serde_json::to_vec_pretty(&emulator.client_secret_json())?;
            let path = dir.join("client_secret.json");
            tokio::task::spawn_blocking(move || util::write_private(&path, &json)).await??;
        }
        Ok(emulator)
    }

    /// Every endpoint, relative to the base URL, with its state applied.
    pub fn router(&self) -> Router {
        let auth = get(consent::page);
        let token = post(oauth::token);
        let revoke = post(oauth::revoke).get(oauth::revoke);
        let userinfo = get(oauth::userinfo).post(oauth::userinfo);
        let tokeninfo = get(oauth::tokeninfo).post(oauth::tokeninfo);
        let mut router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(discovery::openid_configuration),
            )
            .route("/oauth2/v3/certs", get(discovery::jwks))
            .route("/oauth2/v1/certs", get(discovery::v1_certs))
            .route(
                "/.well-known/risc-configuration",
                get(discovery::risc_configuration),
            )
            .route("/risc/jwks", get(discovery::risc_jwks))
            .route("/o/oauth2/v2/auth", auth.clone())
            .route("/o/oauth2/auth", auth)
            .route(consent::SUBMIT_PATH, post(consent::submit))
            .route("/token", token.clone())
            .route("/o/oauth2/token", token.clone())
            .route("/oauth2/v4/token", token)
            .route("/revoke", revoke.clone())
            .route("/o/oauth2/revoke", revoke)
            .route("/oauth2/v3/userinfo", userinfo.clone())
            .route("/v1/userinfo", userinfo)
            .route("/tokeninfo", tokeninfo.clone())
            .route("/oauth2/v3/tokeninfo", tokeninfo)
            .route("/avatar/{sub}", get(discovery::avatar))
            .route("/gsi/client", get(gsi::client))
            .route("/v1/projects/{*rest}", post(kms::call))
            .route(
                "/computeMetadata/v1/instance/service-accounts/{account}/token",
                get(iam::metadata_token),
            )
            .route(
                "/computeMetadata/v1/instance/service-accounts/{account}/email",
                get(iam::metadata_email),
            )
            .merge(drive::router());
        if self.inner.control_api {
            let gate =
                axum::middleware::from_fn_with_state(self.inner.clone(), guard::control_gate);
            // The echo is an API like Google's (a live access token, any method, any body),
            // not a control call: outside the gate.
            router = router
                .nest("/_emulator", control::router().layer(gate))
                .route("/_emulator/echo/{*path}", any(echo::echo));
        }
        router.with_state(self.inner.clone())
    }

    pub fn base_url(&self) -> &Url {
        &self.inner.base_url
    }

    /// Security events (`POST /_emulator/risc`) go to `receiver` only, the deployment's own
    /// `/risc`, as Google delivers only to the receiver an app registered; a call naming another
    /// is refused. Without it, only receivers on a loopback host are accepted. Set once; a
    /// second call changes nothing and answers false.
    pub fn deliver_security_events_only_to(&self, receiver: Url) -> bool {
        self.inner.risc_receiver.set(receiver).is_ok()
    }

    /// Lets the control API answer requests addressed to any host name, not only loopback ones
    /// (`grantkeeper dev --expose-emulator-control`). Requests from pages of another origin
    /// and bodies that are not JSON are still refused.
    pub fn expose_control_api(&self) {
        self.inner.control_any_host.store(true, Ordering::Relaxed);
    }

    /// The project's web client: the one grantkeeper's server authenticates as.
    pub fn web_client(&self) -> OAuthClient {
        read(&self.inner.clients).web_client()
    }

    pub fn android_client_id(&self) -> String {
        read(&self.inner.clients).android.to_string()
    }

    pub fn ios_client_id(&self) -> String {
        read(&self.inner.clients).ios.to_string()
    }

    /// The web client in the format of the file Google's console downloads.
    pub fn client_secret_json(&self) -> serde_json::Value {
        self.inner.client_secret_json()
    }
}

impl Inner {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn settings(&self) -> Settings {
        read(&self.settings).clone()
    }

    /// The emulator's now: the injected clock moved by the `clock_offset_secs` setting.
    pub(crate) fn now(&self, settings: &Settings) -> i64 {
        self.clock.unix() + settings.clock_offset_secs
    }

    /// The emulator's now in Unix milliseconds, for Drive's timestamps.
    pub(crate) fn now_ms(&self, settings: &Settings) -> i64 {
        let ms =
            i64::try_from(self.clock.now().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
        ms.saturating_add(settings.clock_offset_secs.saturating_mul(1000))
    }

    pub(crate) fn client_secret_json(&self) -> serde_json::Value {
        use grantkeeper_core::ExposeSecret;
        let clients = read(&self.clients);
        let web = clients.web_client();
        let (redirect_uris, origins) = clients
            .get(&clients.web)
            .map(|c| {
                (
                    c.all_redirect_uris(&self.base_origin),
                    c.all_javascript_origins(&self.base_origin),
                )
            })
            .unwrap_or_default();
        serde_json::json!({
            "web": {
                "client_id": web.client_id,
                "project_id": clients.project_id,
                "auth_uri": self.url("/o/oauth2/auth"),
                "token_uri": self.url("/token"),
                "auth_provider_x509_cert_url": self.url("/oauth2/v1/certs"),
                "client_secret": web.client_secret.expose_secret(),
                "redirect_uris": redirect_uris,
                "javascript_origins": origins,
            }
        })
    }

    /// Applies the configured fault for `ep`: its latency, then maybe a failure answer.
    pub(crate) async fn gate(&self, ep: Endpoint) -> Option<Response> {
        self.gate_or_corrupt(ep).await.err().map(|res| *res)
    }

    /// [`Inner::gate`], telling besides whether to corrupt the answer (Cloud KMS's fault).
    pub(crate) async fn gate_or_corrupt(&self, ep: Endpoint) -> Result<bool, Box<Response>> {
        let action = lock(&self.faults).decide(ep);
        if action.latency_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(action.latency_ms)).await;
        }
        match action.fail {
            Some(f) => Err(Box::new(fault_response(ep, f))),
            None => Ok(action.corrupt),
        }
    }

    pub(crate) fn record(&self, email: &str, kind: TokenKind, token: &str) {
        let mut issued = lock(&self.issued);
        let log = issued.entry(email.to_owned()).or_default();
        let list = match kind {
            TokenKind::Access => &mut log.access,
            TokenKind::Refresh => &mut log.refresh,
            TokenKind::Id => &mut log.id,
        };
        if list.len() >= ISSUED_LOG_LEN {
            list.pop_front();
        }
        list.push_back(SecretString::from(token.to_owned()));
    }

    pub(crate) async fn risc_key(&self) -> anyhow::Result<Arc<SigningKey>> {
        let dir = self.state_dir.clone();
        self.risc_key
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || keys::risc_key(dir.as_deref()).map(Arc::new))
                    .await?
            })
            .await
            .cloned()
    }

    pub(crate) async fn rogue_key(&self) -> anyhow::Result<Arc<SigningKey>> {
        self.rogue_key
            .get_or_try_init(|| async {
                tokio::task::spawn_blocking(|| SigningKey::generate().map(Arc::new)).await?
            })
            .await
            .cloned()
    }
}

/// The answer of an injected failure: a JSON body speaks the endpoint's own error dialect.
fn fault_response(ep: Endpoint, f: Failure) -> Response {
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut res = match f.body {
        FaultBody::Json if ep == Endpoint::Kms => kms::ApiError::fault(status).into_response(),
        FaultBody::Json if ep == Endpoint::Drive => {
            error::DriveError::fault(status, None).into_response()
        }
        FaultBody::Json => {
            let (error, description) = match f.status {
                429 => ("rate_limit_exceeded", "Rate Limit Exceeded"),
                500 => ("internal_failure", "Backend Error"),
                503 => (
                    "temporarily_unavailable",
                    "The service is currently unavailable.",
                ),
                400..=499 => ("invalid_request", "Bad Request"),
                _ => ("server_error", "Server Error"),
            };
            error::token_json(
                status,
                &serde_json::json!({"error": error, "error_description": description}),
            )
        }
        FaultBody::Html => {
            let mut r = (status, html_error_page(f.status)).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=UTF-8"),
            );
            r
        }
        FaultBody::Garbage => {
            let mut r = (status, "\u{1f}<<not json>> {\"access_token\": ").into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
            r
        }
        FaultBody::Empty => status.into_response(),
    };
    if let Some(secs) = f.retry_after_secs
        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
    {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

/// The kind of page Google's front end answers with when it throttles or refuses a client.
fn html_error_page(status: u16) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error {status} \
         (Forbidden)!!1</title>\n  <p><b>{status}.</b> <ins>That’s an error.</ins>\n  \
         <p>We're sorry, but you do not have access to this page. <ins>That’s all we know.</ins>\n"
    )
}
