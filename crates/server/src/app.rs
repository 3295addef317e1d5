//! The assembled server: settings, store, vault, provider, broker and clock, shared by every
//! operation ([`crate::ops`]) and handler. Another Rust service can build an [`App`] and call
//! the operations directly ([`crate::ops::sign_in`], ...), or mount [`crate::http::router`].

use crate::apikeys::KeyCache;
use crate::audit::AuditLog;
use crate::config::Settings;
use crate::drops::DropWatcher;
use crate::limits::Limits;
use crate::metrics::ActivityFlusher;
use crate::vault::keyring::{KeyringError, StoreKeyring, load_vault};
use crate::webhook::Deliverer;
use crate::workers::{Stopped, Work, Workers};
use grantkeeper_broker::jobs::Jobs;
use grantkeeper_broker::revocation::retry::{RetryPass, RevocationRetrier, Which};
use grantkeeper_broker::{Broker, BrokerSettings};
use grantkeeper_core::{MasterKeySource, Metrics, SharedClock, Vault, VaultHandle};
use grantkeeper_provider::{Provider, SecurityEventVerifier};
use grantkeeper_store::{SharedStore, StoreError};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("vault: {0}")]
    Keyring(#[from] KeyringError),
    #[error("HTTP client: {0}")]
    Http(String),
}

/// The server's shared state. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    store: SharedStore,
    vault: VaultHandle,
    provider: Provider,
    /// Verifies Cross-Account Protection's security event tokens (`POST /risc`).
    security_events: SecurityEventVerifier,
    broker: Broker,
    /// The job engine of `/v1/jobs`, the sweeps and keep-alive.
    jobs: Jobs,
    audit: AuditLog,
    /// API key hash -> key (or its absence), for a few seconds: a revocation takes effect
    /// within that time on every instance, at once where the store tells of drops
    /// ([`crate::drops`]).
    api_keys: Arc<KeyCache>,
    /// For calls to Google APIs on users' behalf: longer timeout than the token endpoint's.
    api_http: reqwest::Client,
    clock: SharedClock,
    /// This is `grantkeeper dev`: the demo page is served and may offer the emulator's
    /// control API.
    dev: bool,
    /// What this process counts, for `/metrics` and (through `activity`) the store.
    metrics: Metrics,
    activity: Arc<ActivityFlusher>,
    /// Retries the revocations at the provider that did not get through.
    revocations: Arc<RevocationRetrier>,
    /// Rate limits of sign-in attempts and `/v1` calls.
    limits: Limits,
    /// The background tasks: audit writer, activity, revocations, webhook, keyring reload,
    /// session purge, drops and keep-alive.
    workers: Workers,
}

/// How long a looked-up API key is trusted without asking the store again.
pub const API_KEY_CACHE_TTL: Duration = Duration::from_secs(10);
/// Most API keys (known or not) remembered at once.
const API_KEY_CACHE_CAPACITY: usize = 10_000;

/// One shared client for every call to the provider: bounded timeouts, no redirects (a token
/// endpoint that redirects is misconfigured, and following it could leak credentials).
pub fn http_client() -> Result<reqwest::Client, StartError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("grantkeeper/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| StartError::Http(e.to_string()))
}

/// The client for proxied Google API calls: no total timeout (large downloads stream), but
/// bounded connect and idle-read times.
pub fn api_http_client() -> Result<reqwest::Client, StartError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("grantkeeper/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| StartError::Http(e.to_string()))
}

impl App {
    /// Builds the server: opens the vault's data keys (creating the first on a new store) and
    /// starts its background tasks ([`crate::workers`]): the audit writer, the writing of
    /// activity, the retrier of queued revocations, the reading of the data keys, the purge of
    /// expired sessions and, when configured, the webhook deliverer. [`App::shutdown`] stops
    /// them.
    pub async fn new(
        settings: Settings,
        store: SharedStore,
        master_key: Arc<dyn MasterKeySource>,
        clock: SharedClock,
    ) -> Result<App, StartError> {
        Self::with_http_client(settings, store, master_key, clock, http_client()?).await
    }

    /// Like [`App::new`], with the HTTP client used to reach the provider.
    pub async fn with_http_client(
        settings: Settings,
        store: SharedStore,
        master_key: Arc<dyn MasterKeySource>,
        clock: SharedClock,
        http: reqwest::Client,
    ) -> Result<App, StartError> {
        // The keyring is read again when a value under an unknown key turns up (another
        // process rotated the keys, and the store refuses a value sealed under the old key) and
        // every `vault.reload_interval`, so a rotation needs no restart. The vault's data keys
        // are unwrapped here, once: the master key source (a Cloud KMS key, an HSM) is not asked
        // again for them.
        let loaded = load_vault(store.as_ref(), master_key.as_ref(), clock.as_ref()).await?;
        let keyring = StoreKeyring::new(store.clone(), master_key, &loaded);
        let vault = VaultHandle::with_source(loaded, Arc::new(keyring), clock.clone());
        let metrics = Metrics::new(clock.clone());
        let security_events =
            SecurityEventVerifier::new(settings.provider.clone(), http.clone(), clock.clone());
        let provider = Provider::new(settings.provider.clone(), http.clone(), clock.clone())
            .with_metrics(metrics.clone());
        let broker = Broker::new(
            store.clone(),
            provider.clone(),
            vault.clone(),
            clock.clone(),
            BrokerSettings {
                min_ttl: settings.broker.min_ttl,
                refresh_concurrency: settings.broker.refresh_concurrency,
                upstream_rate: settings.broker.upstream_rate,
                rejection_cooldown: settings.broker.rejection_cooldown,
                metrics: metrics.clone(),
                ..BrokerSettings::default()
            },
        );
        let jobs = Jobs::new(broker.clone(), store.clone());
        let (audit, audit_writer) = AuditLog::new(store.clone(), clock.clone());
        let activity = ActivityFlusher::new(store.clone(), metrics.clone(), clock.clone());
        let revocations = RevocationRetrier::new(
            store.clone(),
            provider.clone(),
            vault.clone(),
            clock.clone(),
            metrics.clone(),
        );
        let limits = Limits::new(&settings.limits, &clock);
        let api_keys = Arc::new(KeyCache::new(
            API_KEY_CACHE_CAPACITY,
            API_KEY_CACHE_TTL,
            clock.clone(),
        ));
        let workers = Workers::start(Work {
            audit: audit_writer,
            activity: Arc::downgrade(&activity),
            revocations: Arc::downgrade(&revocations),
            webhook: settings.webhook.clone().map(|webhook| Deliverer {
                store: store.clone(),
                settings: webhook,
                http,
                clock: clock.clone(),
            }),
            vault: vault.clone(),
            keyring_reload: settings.keyring_reload,
            store: store.clone(),
            clock: clock.clone(),
            session_purge: settings.session_purge,
            drops: DropWatcher::new(&store, broker.clone(), api_keys.clone(), clock.clone()),
        });
        Ok(App {
            inner: Arc::new(Inner {
                limits,
                settings,
                store,
                vault,
                provider,
                security_events,
                broker,
                jobs,
                audit,
                api_keys,
                api_http: api_http_client()?,
                clock,
                dev: false,
                metrics,
                activity,
                revocations,
                workers,
            }),
        })
    }

    /// Marks this as `grantkeeper dev`'s server: the demo page at `/` and `/demo/*`, with the
    /// emulator's control API offered on it.
    pub fn into_dev(self) -> App {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.dev = true;
                App {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => App { inner },
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }
    pub fn store(&self) -> &SharedStore {
        &self.inner.store
    }
    pub fn provider(&self) -> &Provider {
        &self.inner.provider
    }
    /// The verifier of the provider's security event tokens.
    pub fn security_events(&self) -> &SecurityEventVerifier {
        &self.inner.security_events
    }
    pub fn broker(&self) -> &Broker {
        &self.inner.broker
    }
    /// The job engine: `/v1/jobs`, the sweeps, keep-alive and `jobs run` all go through it.
    pub fn jobs(&self) -> &Jobs {
        &self.inner.jobs
    }
    /// Starts keep-alive of idle grants in the background, as `serve` does, unless
    /// `[jobs] keepalive_after` turned it off; stopped by [`App::shutdown`].
    pub fn start_keepalive(&self) {
        let Some(settings) = self.inner.settings.keepalive.clone() else {
            tracing::info!("keep-alive is off ([jobs] keepalive_after = \"0s\")");
            return;
        };
        let workers = &self.inner.workers;
        if !workers.has(crate::keepalive::TASK) {
            workers.spawn(
                crate::keepalive::TASK,
                crate::keepalive::run(
                    self.inner.jobs.clone(),
                    settings,
                    self.inner.clock.clone(),
                    workers.signal(),
                ),
            );
        }
    }
    pub fn audit(&self) -> &AuditLog {
        &self.inner.audit
    }
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }
    /// What this process counts: `/metrics` renders it, and its activity goes to the store.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
    /// Writes the activity counted so far to the store now (it is otherwise written every
    /// [`crate::metrics::FLUSH_EVERY`]); returns how many points. Call before a clean exit.
    pub async fn flush_activity(&self) -> Result<usize, StoreError> {
        self.inner.activity.flush().await
    }
    /// Retries every queued revocation at the provider now, whenever its next attempt was
    /// due (the background task retries due ones every [`grantkeeper_broker::revocation::retry::POLL_EVERY`]).
    pub async fn retry_revocations_now(&self) -> Result<RetryPass, StoreError> {
        self.inner.revocations.retry(Which::All).await
    }
    /// Stops the background tasks before a clean exit: what is still held in memory is
    /// written (audit rows, activity), the webhook events and queued revocations due are
    /// tried once more, and keep-alive finishes its refreshes under way; waits at most
    /// [`crate::workers::STOP_WAIT`] for them, logging those that did not finish. Call it once,
    /// after the last request (the audit rows of later ones are not written).
    pub async fn shutdown(&self) -> Stopped {
        self.inner.workers.stop().await
    }
    /// Whether this is `grantkeeper dev` (the emulator beside the server, its control API open).
    pub fn dev_mode(&self) -> bool {
        self.inner.dev
    }
    /// Whether the demo page and its `/demo/*` calls are served (`dev`, or `server.demo_page`).
    pub fn demo_page(&self) -> bool {
        self.inner.dev || self.inner.settings.demo_page
    }
    /// The rate limits of sign-in attempts (per client IP) and `/v1` calls (per API key).
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }
    pub(crate) fn api_key_cache(&self) -> &KeyCache {
        &self.inner.api_keys
    }
    /// The client for calls to Google APIs as a user.
    pub fn api_http(&self) -> &reqwest::Client {
        &self.inner.api_http
    }

    /// The current vault. Rotation swaps it; holders of the old one keep a consistent view.
    pub fn vault(&self) -> Arc<Vault> {
        self.inner.vault.get()
    }

    /// The handle that key rotation swaps vaults through.
    pub fn vault_handle(&self) -> &VaultHandle {
        &self.inner.vault
    }
}
