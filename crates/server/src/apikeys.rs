//! API keys of app services: created once and shown once, stored as a SHA-256, checked on
//! every `/v1` call through a short-lived cache.

use crate::app::App;
use crate::error::ApiError;
use crate::signin::hex;
use aws_lc_rs::digest;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use grantkeeper_core::{Clock, ExposeSecret, SecretString};
use grantkeeper_store::{ApiKeyRecord, ApiKeyStore, StoreError};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyScope {
    /// `POST /v1/users/{sub}/token`
    Token,
    /// `/v1/users/{sub}/google/...`
    Proxy,
    /// `GET /v1/users...`
    UsersRead,
    /// `DELETE /v1/users/{sub}`
    UsersWrite,
}

impl KeyScope {
    pub const ALL: [KeyScope; 4] = [
        KeyScope::Token,
        KeyScope::Proxy,
        KeyScope::UsersRead,
        KeyScope::UsersWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Token => "token",
            KeyScope::Proxy => "proxy",
            KeyScope::UsersRead => "users:read",
            KeyScope::UsersWrite => "users:write",
        }
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyScope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyScope::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!("unknown scope {s:?}: use token, proxy, users:read or users:write")
            })
    }
}

/// The caller of a `/v1` request: its API key, shared with the key cache.
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

/// The SHA-256 of a key's secret, as the store keeps it (hex).
pub fn hash_key(secret: &str) -> String {
    hex(&key_digest(secret))
}

/// The SHA-256 of a key's secret: what the key cache is keyed by, so that a request whose key
/// is cached costs one hash and no formatting.
fn key_digest(secret: &str) -> [u8; 32] {
    let mut digest = [0; 32];
    digest.copy_from_slice(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref());
    digest
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
        id: format!("key_{}", &hex(&grantkeeper_core::random::bytes::<6>())),
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

impl App {
    /// Authenticates a `/v1` request, checks that its key may do `needed`, and counts it
    /// against the key's rate limit (`limits.v1_per_second`).
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        needed: KeyScope,
    ) -> Result<Caller, ApiError> {
        let missing = || {
            ApiError::Unauthorized(
                "send an API key as `Authorization: Bearer <key>` (see `grantkeeper api-keys create`)"
                    .to_owned(),
            )
        };
        let value = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(missing)?;
        let (scheme, secret) = value.split_once(' ').ok_or_else(missing)?;
        if !scheme.eq_ignore_ascii_case("bearer") || secret.trim().is_empty() {
            return Err(missing());
        }
        let digest = key_digest(secret.trim());
        let key = match self.api_key_cache().get(&digest) {
            Some(k) => k,
            None => {
                let k = self
                    .store()
                    .api_key_by_hash(&hex(&digest))
                    .await?
                    .map(Arc::new);
                self.api_key_cache().insert(digest, k.clone());
                k
            }
        };
        let key = key.filter(|k| k.revoked_at.is_none()).ok_or_else(|| {
            ApiError::Unauthorized("the API key is unknown or revoked".to_owned())
        })?;
        if !key.scopes.iter().any(|s| s == needed.as_str()) {
            return Err(ApiError::Forbidden(format!(
                "the API key {} lacks the scope {needed}",
                key.id
            )));
        }
        self.limits().check_key(&key.id)?;
        Ok(Caller { key })
    }
}
