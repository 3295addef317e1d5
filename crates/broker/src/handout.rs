//! The hand-out policy: which token held answers a caller, without a refresh.
//!
//! Owns: the process's token cache, opening the token persisted with a grant, how long a token
//! must stay valid (an explicit `min_ttl` honoured exactly; else the configured one with a
//! per-grant jitter, capped by the provider's observed lifetime), what each kind of demand
//! accepts, and which token a transient failure may still answer with.
//!
//! Leaves to others: refreshing (the refresh engine, which asks this module what it may
//! answer), the store, and the single flight. Calls nothing of the engine's.

use crate::cache::{ScopeSets, TokenCache};
use crate::{AccessToken, BrokerError, BrokerSettings};
use grantkeeper_core::{
    Aad, ExposeSecret, GrantState, Metrics, Scopes, SecretString, SharedClock, VaultHandle,
};
use grantkeeper_store::GrantRecord;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use time::OffsetDateTime;

/// What a caller queued on a grant's lock wants.
pub(crate) enum Demand {
    /// Any token covering `scopes` that stays valid long enough.
    HandOut {
        scopes: Scopes,
        min_ttl: Option<Duration>,
    },
    /// A new token from the provider.
    Refresh,
    /// A token other than the one the API refused.
    Rejected(SecretString),
    /// A refresh from exactly this snapshot of the grant (tests of the invalid_grant race).
    Snapshot(Box<GrantRecord>),
}

/// The hand-out policy of one broker, with the tokens it holds.
pub(crate) struct HandOut {
    clock: SharedClock,
    vault: VaultHandle,
    min_ttl: Duration,
    jitter: Duration,
    metrics: Metrics,
    cache: TokenCache,
    /// `expires_in` of the provider's last refresh answer, in seconds; 0 until one is seen.
    observed_lifetime: AtomicU64,
    scope_sets: ScopeSets,
}

impl HandOut {
    pub(crate) fn new(settings: &BrokerSettings, clock: SharedClock, vault: VaultHandle) -> Self {
        HandOut {
            cache: TokenCache::new(settings.cache_capacity, clock.clone()),
            clock,
            vault,
            min_ttl: settings.min_ttl,
            jitter: settings.jitter,
            metrics: settings.metrics.clone(),
            observed_lifetime: AtomicU64::new(0),
            scope_sets: ScopeSets::new(),
        }
    }

    /// See [`crate::Broker::default_min_ttl`].
    pub(crate) fn default_min_ttl(&self, sub: &str) -> Duration {
        let jitter_ms = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        let offset = if jitter_ms == 0 {
            0
        } else {
            stable_hash(sub) % jitter_ms
        };
        let wanted = self.min_ttl.saturating_add(Duration::from_millis(offset));
        match self.observed_lifetime.load(Ordering::Relaxed) {
            0 => wanted,
            lifetime => wanted.min(Duration::from_secs(lifetime) / 2),
        }
    }

    /// Remembers the lifetime of the tokens the provider hands out (`expires_in`, seconds).
    pub(crate) fn observe_lifetime(&self, expires_in: i64) {
        if let Ok(secs) = u64::try_from(expires_in)
            && secs > 0
        {
            self.observed_lifetime.store(secs, Ordering::Relaxed);
        }
    }

    fn need(&self, sub: &str, explicit: Option<Duration>) -> Duration {
        explicit.unwrap_or_else(|| self.default_min_ttl(sub))
    }

    /// True when the token is unexpired and stays valid for `need`.
    fn lasts(&self, token: &AccessToken, need: Duration) -> bool {
        let now = self.clock.now();
        token.expires_at > now && remaining(token.expires_at, now) >= need
    }

    pub(crate) fn unexpired(&self, token: &AccessToken) -> bool {
        token.expires_at > self.clock.now()
    }

    /// The cached token of `sub` when it covers `scopes` and lasts for `min_ttl` (see
    /// [`crate::Broker::access_token`]); counts the cache's hit, and its miss when `count_miss`.
    pub(crate) fn cached(
        &self,
        sub: &str,
        scopes: &Scopes,
        min_ttl: Option<Duration>,
        count_miss: bool,
    ) -> Option<Arc<AccessToken>> {
        let need = self.need(sub, min_ttl);
        let hit = self
            .cache
            .get(sub)
            .filter(|t| t.scopes.contains_all(scopes) && self.lasts(t, need));
        if hit.is_some() || count_miss {
            self.metrics.cache(hit.is_some());
        }
        hit
    }

    /// The cached token of `sub`, whatever it covers and however long it lasts.
    pub(crate) fn cached_any(&self, sub: &str) -> Option<Arc<AccessToken>> {
        self.cache.get(sub)
    }

    /// See [`crate::Broker::token_on_hand`].
    pub(crate) async fn on_hand(
        &self,
        grant: &GrantRecord,
        scopes: &Scopes,
        min_ttl: Option<Duration>,
    ) -> Option<Arc<AccessToken>> {
        let sub = grant.sub.as_str();
        if unusable(grant).is_some() {
            return None;
        }
        if let Some(t) = self.cached(sub, scopes, min_ttl, false) {
            return Some(t);
        }
        let held = self.persisted(sub, grant).await?;
        if !(held.scopes.contains_all(scopes) && self.lasts(&held, self.need(sub, min_ttl))) {
            return None;
        }
        self.keep(sub, held.clone());
        Some(Arc::new(held))
    }

    /// Keeps `token` as the one this process hands out for `sub`.
    pub(crate) fn keep(&self, sub: &str, token: AccessToken) {
        self.cache.insert(sub, token);
    }

    /// Drops the token this process holds for `sub`.
    pub(crate) fn drop_held(&self, sub: &str) {
        self.cache.invalidate(sub);
    }

    /// Drops every token this process holds.
    pub(crate) fn drop_all(&self) {
        self.cache.invalidate_all();
    }

    /// One shared set for tokens that cover `scopes`.
    pub(crate) fn share(&self, scopes: &Scopes) -> Arc<Scopes> {
        self.scope_sets.share(scopes)
    }

    /// The access token persisted with the grant, opened (under a key the vault does not hold
    /// yet, after reading the keyring again: another process rotated the keys). One that does
    /// not open is treated as absent: a refresh replaces it.
    pub(crate) async fn persisted(&self, sub: &str, grant: &GrantRecord) -> Option<AccessToken> {
        let sealed = grant.access_token.as_ref()?;
        match self
            .vault
            .open_secret(&sealed.sealed, Aad::access_token(sub))
            .await
        {
            Ok(token) => Some(AccessToken {
                token,
                expires_at: sealed.expires_at,
                scopes: self.scope_sets.share(&grant.scopes),
            }),
            Err(e) => {
                tracing::warn!(sub, error = %e, "the persisted access token does not open; refreshing instead");
                None
            }
        }
    }

    /// True when a token just refreshed (by a flight of this process, or by another instance)
    /// answers `demand`. Not held to `min_ttl`: when the provider's lifetime is shorter, a
    /// fresh token is the best there is.
    pub(crate) fn takes_fresh(&self, demand: &Demand, t: &AccessToken) -> bool {
        let covers = match demand {
            Demand::HandOut { scopes, .. } => t.scopes.contains_all(scopes),
            Demand::Refresh => true,
            Demand::Rejected(rejected) => !same(&t.token, rejected),
            Demand::Snapshot(_) => false,
        };
        covers && self.unexpired(t)
    }

    /// True when `token`, already held, answers `demand` without a refresh.
    pub(crate) fn satisfies(&self, sub: &str, demand: &Demand, token: &AccessToken) -> bool {
        match demand {
            Demand::HandOut { scopes, min_ttl } => {
                token.scopes.contains_all(scopes) && self.lasts(token, self.need(sub, *min_ttl))
            }
            Demand::Rejected(rejected) => !same(&token.token, rejected) && self.unexpired(token),
            Demand::Refresh | Demand::Snapshot(_) => false,
        }
    }

    /// What answers `demand` when its refresh fails transiently: the longest-lived unexpired
    /// token held that covers it, but only when the caller has nothing but the default margin
    /// at stake (a hand-out without an explicit `min_ttl`).
    pub(crate) fn fallback(
        &self,
        demand: &Demand,
        held: [Option<AccessToken>; 2],
    ) -> Option<AccessToken> {
        match demand {
            Demand::HandOut {
                scopes,
                min_ttl: None,
            } => held
                .into_iter()
                .flatten()
                .filter(|t| t.scopes.contains_all(scopes) && self.unexpired(t))
                .max_by_key(|t| t.expires_at),
            _ => None,
        }
    }
}

/// Why a grant cannot mint tokens, if it cannot.
pub(crate) fn unusable(grant: &GrantRecord) -> Option<BrokerError> {
    if grant.state == GrantState::Revoked {
        return Some(BrokerError::Revoked {
            reason: grant.reason.clone().unwrap_or_else(|| "revoked".to_owned()),
        });
    }
    grant.needs_consent().then_some(BrokerError::NeedsConsent)
}

/// Compares two tokens. Not constant-time: both come from us or from our own caller.
pub(crate) fn same(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret() == b.expose_secret()
}

fn remaining(expires_at: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(expires_at - now).unwrap_or(Duration::ZERO)
}

/// A hash of `s` that every process and build agrees on (FNV-1a, then splitmix64's finalizer
/// to spread it): a spread of grants over the jitter, computed on every hand-out, so it must be
/// cheap; it protects nothing.
fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in s.as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::stable_hash;

    #[test]
    fn the_jitter_hash_is_fixed_and_spreads_grants() {
        // Pinned: every instance and every later build must place a grant at the same jitter.
        assert_eq!(stable_hash(""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(stable_hash("102373265213109408601"), 0xc5fb_09dc_9907_bcdf);
        // Google's subs differ in a few digits; their jitters must not bunch up.
        let mut buckets = [0u32; 10];
        for i in 0..10_000u64 {
            let sub = format!("1023732652131094{i:05}");
            buckets[usize::try_from(stable_hash(&sub) % 60_000 / 6_000).unwrap()] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
    }
}
