//! API keys of app services: made once and shown once ([`create_api_key`]), stored as a
//! SHA-256, and checked for a scope on every `/v1` call ([`authenticate`]) through a
//! short-lived cache ([`crate::apikeys::KeyCache`]).

use crate::apikeys::{KeyScope, hash_key, key_digest};
use crate::app::App;
use crate::ops::store_code;
use grantkeeper_core::{Clock, ExposeSecret, SecretString};
use grantkeeper_store::{ApiKeyRecord, ApiKeyStore, StoreError};
use std::sync::Arc;

/// An authenticated app service: its API key, shared with the key cache.
#[derive(Clone, Debug)]
pub struct Caller {
    key: Arc<ApiKeyRecord>,
}

impl Caller {
    /// The key's public id, as audit rows name the caller.
    pub fn key_id(&self) -> &str {
        &self.key.id
    }
}

/// Why a key was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the API key is unknown or revoked")]
    Unknown,
    #[error("the API key {key_id} lacks the scope {needed}")]
    LacksScope { key_id: String, needed: KeyScope },
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl KeyError {
    /// The contract's error code.
    pub fn code(&self) -> &'static str {
        match self {
            KeyError::Unknown => "unauthorized",
            KeyError::LacksScope { .. } => "forbidden",
            KeyError::Store(e) => store_code(e),
        }
    }
}

/// The app service whose key `secret` is, if that key is live and may do `needed`. The store
/// is asked at most once per key and [`crate::app::API_KEY_CACHE_TTL`].
pub async fn authenticate(app: &App, secret: &str, needed: KeyScope) -> Result<Caller, KeyError> {
    let digest = key_digest(secret);
    let key = match app.api_key_cache().get(&digest) {
        Some(k) => k,
        None => {
            let k = app
                .store()
                .api_key_by_hash(&hex::encode(digest))
                .await?
                .map(Arc::new);
            app.api_key_cache().insert(digest, k.clone());
            k
        }
    };
    let key = key
        .filter(|k| k.revoked_at.is_none())
        .ok_or(KeyError::Unknown)?;
    if !key.scopes.iter().any(|s| s == needed.as_str()) {
        return Err(KeyError::LacksScope {
            key_id: key.id.clone(),
            needed,
        });
    }
    Ok(Caller { key })
}

/// Makes a key; returns its record (already stored) and the secret, which is never shown again.
pub async fn create_api_key(
    store: &dyn ApiKeyStore,
    clock: &dyn Clock,
    name: &str,
    scopes: &[KeyScope],
) -> Result<(ApiKeyRecord, SecretString), StoreError> {
    let secret = SecretString::from(format!("gk_{}", grantkeeper_core::random::token::<32>()));
    let record = ApiKeyRecord {
        id: format!(
            "key_{}",
            &hex::encode(grantkeeper_core::random::bytes::<6>())
        ),
        name: name.to_owned(),
        hash: hash_key(secret.expose_secret()),
        scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
        created_at: clock.now(),
        revoked_at: None,
    };
    store.create_api_key(record.clone()).await?;
    Ok((record, secret))
}

/// Registers an existing secret (the dev API key, kept in a file) if it is not yet known.
pub async fn ensure_api_key(
    store: &dyn ApiKeyStore,
    clock: &dyn Clock,
    id: &str,
    name: &str,
    secret: &SecretString,
) -> Result<(), StoreError> {
    let hash = hash_key(secret.expose_secret());
    if store.api_key_by_hash(&hash).await?.is_some() {
        return Ok(());
    }
    let record = ApiKeyRecord {
        id: id.to_owned(),
        name: name.to_owned(),
        hash,
        scopes: KeyScope::ALL
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect(),
        created_at: clock.now(),
        revoked_at: None,
    };
    match store.create_api_key(record).await {
        Ok(()) | Err(StoreError::AlreadyExists) => Ok(()),
        Err(e) => Err(e),
    }
}
