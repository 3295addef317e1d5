//! The assembled server: settings, store, vault, provider and clock, shared by every handler.
//! Another Rust service can build an [`App`] and call its operations directly, or mount its
//! [`App::router`].

use crate::config::Settings;
use crate::keys::{KeyringError, load_vault};
use grantkeeper_core::{MasterKey, SharedClock, Vault, VaultHandle};
use grantkeeper_provider::Provider;
use grantkeeper_store::SharedStore;
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
    clock: SharedClock,
    demo_page: bool,
}

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

impl App {
    /// Builds the server: opens the vault's data keys (creating the first on a new store).
    pub async fn new(
        settings: Settings,
        store: SharedStore,
        master_key: &MasterKey,
        clock: SharedClock,
    ) -> Result<App, StartError> {
        Self::with_http_client(settings, store, master_key, clock, http_client()?).await
    }

    /// Like [`App::new`], with the HTTP client used to reach the provider.
    pub async fn with_http_client(
        settings: Settings,
        store: SharedStore,
        master_key: &MasterKey,
        clock: SharedClock,
        http: reqwest::Client,
    ) -> Result<App, StartError> {
        let vault = load_vault(store.as_ref(), master_key, clock.as_ref()).await?;
        let provider = Provider::new(settings.provider.clone(), http, clock.clone());
        Ok(App {
            inner: Arc::new(Inner {
                settings,
                store,
                vault: VaultHandle::new(vault),
                provider,
                clock,
                demo_page: false,
            }),
        })
    }

    /// Serves the development sign-in page at `/` (used by `grantkeeper dev`).
    pub fn with_demo_page(self) -> App {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.demo_page = true;
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
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }
    pub fn demo_page(&self) -> bool {
        self.inner.demo_page
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
