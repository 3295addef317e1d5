//! API keys of app services: what a key may do ([`KeyScope`]), how its secret is stored (a
//! SHA-256) and the short-lived cache of looked-up keys. Authenticating a key and making one
//! are operations ([`crate::ops::api_keys`]), re-exported here.

use aws_lc_rs::digest;
use grantkeeper_core::SharedClock;
use grantkeeper_store::ApiKeyRecord;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

pub use crate::ops::api_keys::{create_api_key, ensure_api_key};

/// API keys by the SHA-256 of their secret, unknown ones too (as None), each trusted for a
/// time to live (on the injected clock's monotonic reading): a key revoked anywhere stops working here within it. A read lock and one
/// lookup per `/v1` call; with few keys in use, no eviction policy is needed beyond a bound:
/// when full, expired entries go first, then unknown ones; a flood of made-up keys is then
/// no longer remembered, while real keys stay.
pub(crate) struct KeyCache {
    entries: RwLock<HashMap<[u8; 32], Entry, foldhash::fast::RandomState>>,
    capacity: usize,
    ttl: Duration,
    clock: SharedClock,
}

struct Entry {
    /// When the store was asked: the clock's monotonic reading.
    at: Duration,
    key: Option<Arc<ApiKeyRecord>>,
}

impl KeyCache {
    pub(crate) fn new(capacity: usize, ttl: Duration, clock: SharedClock) -> KeyCache {
        KeyCache {
            entries: RwLock::new(HashMap::default()),
            capacity,
            ttl,
            clock,
        }
    }

    /// What the store said of this digest within the time to live: Some(None) for a key it
    /// does not know.
    pub(crate) fn get(&self, digest: &[u8; 32]) -> Option<Option<Arc<ApiKeyRecord>>> {
        let now = self.clock.monotonic();
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(digest)
            .filter(|e| now.saturating_sub(e.at) < self.ttl)
            .map(|e| e.key.clone())
    }

    /// Forgets the key whose hex SHA-256 is `hash` (it was revoked or deleted elsewhere).
    pub(crate) fn forget(&self, hash: &str) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|digest, _| hex::encode(digest) != hash);
    }

    /// Forgets every key.
    pub(crate) fn clear(&self) {
        self.entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    pub(crate) fn insert(&self, digest: [u8; 32], key: Option<Arc<ApiKeyRecord>>) {
        let now = self.clock.monotonic();
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity && !entries.contains_key(&digest) {
            let ttl = self.ttl;
            entries.retain(|_, e| now.saturating_sub(e.at) < ttl);
            if entries.len() >= self.capacity {
                if key.is_none() {
                    return;
                }
                entries.retain(|_, e| e.key.is_some());
                if entries.len() >= self.capacity {
                    entries.clear();
                }
            }
        }
        entries.insert(digest, Entry { at: now, key });
    }
}

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
    /// `/v1/jobs...`: bulk work over every user, with their tokens
    Jobs,
}

impl KeyScope {
    pub const ALL: [KeyScope; 5] = [
        KeyScope::Token,
        KeyScope::Proxy,
        KeyScope::UsersRead,
        KeyScope::UsersWrite,
        KeyScope::Jobs,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Token => "token",
            KeyScope::Proxy => "proxy",
            KeyScope::UsersRead => "users:read",
            KeyScope::UsersWrite => "users:write",
            KeyScope::Jobs => "jobs",
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
                format!("unknown scope {s:?}: use token, proxy, users:read, users:write or jobs")
            })
    }
}

/// The SHA-256 of a key's secret, as the store keeps it (hex).
pub fn hash_key(secret: &str) -> String {
    hex::encode(key_digest(secret))
}

/// The SHA-256 of a key's secret: what the key cache is keyed by, so that a request whose key
/// is cached costs one hash and no formatting.
pub(crate) fn key_digest(secret: &str) -> [u8; 32] {
    let mut digest = [0; 32];
    digest.copy_from_slice(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref());
    digest
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantkeeper_core::{ManualClock, SystemClock};
    use time::OffsetDateTime;

    fn record(id: &str) -> Option<Arc<ApiKeyRecord>> {
        Some(Arc::new(ApiKeyRecord {
            id: id.to_owned(),
            name: id.to_owned(),
            hash: String::new(),
            scopes: vec!["token".to_owned()],
            created_at: OffsetDateTime::UNIX_EPOCH,
            revoked_at: None,
        }))
    }

    fn id(cache: &KeyCache, digest: u8) -> Option<Option<String>> {
        cache.get(&[digest; 32]).map(|k| k.map(|k| k.id.clone()))
    }

    #[test]
    fn the_key_cache_answers_within_its_time_to_live_only() {
        let clock = ManualClock::new();
        let cache = KeyCache::new(10, Duration::from_secs(3600), clock.clone());
        assert_eq!(id(&cache, 1), None);
        cache.insert([1; 32], record("a"));
        cache.insert([2; 32], None);
        assert_eq!(id(&cache, 1), Some(Some("a".to_owned())));
        assert_eq!(
            id(&cache, 2),
            Some(None),
            "an unknown key is remembered as unknown"
        );
        assert_eq!(id(&cache, 3), None);

        clock.advance(time::Duration::minutes(59));
        assert_eq!(id(&cache, 1), Some(Some("a".to_owned())));
        clock.advance(time::Duration::minutes(1));
        assert_eq!(
            id(&cache, 1),
            None,
            "an entry past its time to live is asked again"
        );
        assert_eq!(id(&cache, 2), None);

        let stale = KeyCache::new(10, Duration::ZERO, SystemClock::shared());
        stale.insert([1; 32], record("a"));
        assert_eq!(id(&stale, 1), None, "a time to live of zero keeps nothing");
    }

    #[test]
    fn a_full_key_cache_gives_up_unknown_keys_before_real_ones() {
        let cache = KeyCache::new(2, Duration::from_secs(3600), SystemClock::shared());
        cache.insert([1; 32], None);
        cache.insert([2; 32], record("a"));
        cache.insert([3; 32], record("b"));
        assert_eq!(id(&cache, 1), None, "the unknown key made room");
        assert_eq!(id(&cache, 2), Some(Some("a".to_owned())));
        assert_eq!(id(&cache, 3), Some(Some("b".to_owned())));

        cache.insert([4; 32], None);
        assert_eq!(
            id(&cache, 4),
            None,
            "when full of real keys, unknown ones are not kept"
        );
        assert_eq!(id(&cache, 2), Some(Some("a".to_owned())));

        cache.insert([2; 32], record("a2"));
        assert_eq!(
            id(&cache, 2),
            Some(Some("a2".to_owned())),
            "a held digest is replaced in place"
        );
        assert_eq!(id(&cache, 3), Some(Some("b".to_owned())));

        cache.insert([5; 32], record("c"));
        assert_eq!(id(&cache, 5), Some(Some("c".to_owned())), "the bound holds");
        assert!(cache.entries.read().unwrap().len() <= 2);
    }
}
