//! The process's access tokens, bounded, so that a hand-out of a valid token costs no store
//! read and no upstream call. Entries leave at their token's expiry (by the injected clock at
//! insertion) or when the capacity is reached.

use crate::AccessToken;
use foldhash::fast::RandomState;
use grantkeeper_core::SharedClock;
use moka::Expiry;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct TokenCache {
    cache: moka::sync::Cache<String, Arc<AccessToken>, RandomState>,
}

/// Expires an entry when its token does.
struct UntilExpiry {
    clock: SharedClock,
}

impl UntilExpiry {
    fn left(&self, token: &AccessToken) -> Option<Duration> {
        Some(Duration::try_from(token.expires_at - self.clock.now()).unwrap_or(Duration::ZERO))
    }
}

impl Expiry<String, Arc<AccessToken>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _sub: &String,
        token: &Arc<AccessToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        self.left(token)
    }

    fn expire_after_update(
        &self,
        _sub: &String,
        token: &Arc<AccessToken>,
        _updated_at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        self.left(token)
    }
}

impl TokenCache {
    pub(crate) fn new(capacity: u64, clock: SharedClock) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(capacity)
            .expire_after(UntilExpiry { clock })
            .build_with_hasher(RandomState::default());
        Self { cache }
    }

    pub(crate) fn get(&self, sub: &str) -> Option<Arc<AccessToken>> {
        self.cache.get(sub)
    }

    pub(crate) fn insert(&self, sub: &str, token: AccessToken) {
        self.cache.insert(sub.to_owned(), Arc::new(token));
    }

    pub(crate) fn invalidate(&self, sub: &str) {
        self.cache.invalidate(sub);
    }
}
