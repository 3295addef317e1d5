//! The process's access tokens, bounded, so that a hand-out of a valid token costs no store
//! read and no upstream call. Entries leave at their token's expiry (by the injected clock at
//! insertion) or when the capacity is reached.

use crate::AccessToken;
use foldhash::fast::RandomState;
use grantkeeper_core::Scopes;
use grantkeeper_core::SharedClock;
use moka::Expiry;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
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

    pub(crate) fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }
}

/// One `Arc` per distinct scope set, for the tokens to share: users mostly grant the same
/// few sets, and a set of scope URLs copied into each of 100,000 cached tokens was about 40 MB.
/// Bounded: past [`ScopeSets::MAX`] distinct sets it starts again (tokens keep theirs).
pub(crate) struct ScopeSets {
    sets: Mutex<HashSet<Arc<Scopes>, RandomState>>,
}

impl ScopeSets {
    const MAX: usize = 1024;

    pub(crate) fn new() -> Self {
        Self {
            sets: Mutex::new(HashSet::default()),
        }
    }

    /// The shared copy of `scopes`.
    pub(crate) fn share(&self, scopes: &Scopes) -> Arc<Scopes> {
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = sets.get(scopes) {
            return shared.clone();
        }
        if sets.len() >= Self::MAX {
            sets.clear();
        }
        let shared = Arc::new(scopes.clone());
        sets.insert(shared.clone());
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_scope_sets_are_shared_and_the_count_is_bounded() {
        let sets = ScopeSets::new();
        let a = sets.share(&Scopes::parse("openid email"));
        let b = sets.share(&Scopes::parse("email openid"));
        assert!(Arc::ptr_eq(&a, &b));
        let c = sets.share(&Scopes::parse("openid"));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(*c, Scopes::parse("openid"));
        for i in 0..ScopeSets::MAX * 2 {
            let s = Scopes::parse(&format!("scope-{i}"));
            assert_eq!(*sets.share(&s), s);
        }
        assert!(sets.sets.lock().unwrap().len() <= ScopeSets::MAX);
        // A token made before the sets started again keeps its own.
        assert_eq!(*a, Scopes::parse("openid email"));
    }
}
