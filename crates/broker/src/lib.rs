//! grantkeeper's broker: the one owner of access tokens.
//!
//! Owns: handing out an access token for a user's grant, valid for as long as the caller
//! needs (a bounded in-process cache, then the token persisted in the store, then a refresh);
//! one refresh per grant at a time, across every instance sharing the store (callers queue on
//! the grant's lock and share its result; before calling upstream, the one in front takes the
//! grant's refresh lease in the store, or waits for the token of the instance holding it);
//! sealing, fenced persistence and caching of what a refresh brings; per-grant backoff with
//! jitter after transient upstream failures (the grant turns `failing`, never `revoked`);
//! marking a grant `revoked` on `invalid_grant` after ruling out a race with a newer refresh
//! token; revoking a grant at the provider, or when it cannot be reached, revoking it here at
//! once and queueing the provider's revocation ([`Broker::revoke_or_queue`]), then retrying the
//! queued ones ([`revocation::retry`]); and the [`sweep`]
//! jobs over every grant, shared by any number of processes.
//!
//! Leaves to others: HTTP towards clients and its error bodies (the server maps
//! [`BrokerError`]), the token endpoint protocol (the provider), storage and its fencing (the
//! store), sealing (the vault), sign-in. Nothing here logs a token: logs carry the `sub`, the
//! outcome and the latency.
// Indexing that may panic is refused outside tests (`get`, patterns, `split_at_checked`); not in
// [workspace.lints], which would reach the helpers of the integration tests too.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

mod backoff;
mod budget;
mod cache;
mod cooldown;
mod flight;
pub mod jobs;
pub mod revocation;
pub mod sweep;

pub use revocation::{
    FIRST_RETRY, LONGEST_RETRY, QUEUED_NOTE, RevocationOutcome, revocation_retry_delay,
};

use crate::backoff::Backoffs;
use crate::budget::Budget;
use crate::cache::{ScopeSets, TokenCache};
use crate::cooldown::Cooldowns;
use crate::flight::{Flights, InstanceGuard, InstanceLock, Landed};
use grantkeeper_core::metrics::Warning;
use grantkeeper_core::{
    Aad, ExposeSecret, GrantState, Metrics, Scopes, SecretString, SharedClock, VaultHandle,
    fingerprint,
};
use grantkeeper_provider::{Provider, ProviderError, TokenResponse};
use grantkeeper_store::{
    BrokerStore, GrantRecord, RefreshSuccess, SealedAccessToken, SealedRefreshToken, StateUpdate,
    StoreError, TokenFingerprint,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

/// Longest a refresh may take, whatever the HTTP client's own timeouts: a hung provider must
/// not hold a grant's lock (and every caller queued on it) for ever.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a fenced write is retried after the row moved under it.
const FENCE_ATTEMPTS: usize = 3;

/// A refresh token that dies at an age in this range (in hours) most likely met the 7-day
/// expiry of apps in the Testing publishing status: from 6.5 days (the expiry is counted from
/// consent, a little before grantkeeper received the token) to 8 days (a grant nobody asked a
/// token for in the day after it died).
const TESTING_EXPIRY_HOURS: std::ops::Range<i64> = 156..192;

/// What the age of a refresh token that died (`invalid_grant`) suggests, if anything.
fn death_warning(age: time::Duration) -> Option<Warning> {
    let hours = age.whole_hours();
    if TESTING_EXPIRY_HOURS.contains(&hours) {
        Some(Warning::TestingExpiry)
    } else if hours < TESTING_EXPIRY_HOURS.start {
        Some(Warning::TokenDiedEarly)
    } else {
        // Older tokens die for many reasons (six months unused, a password change...).
        None
    }
}

/// How the broker hands out and refreshes tokens.
#[derive(Clone, Debug)]
pub struct BrokerSettings {
    /// A hand-out without an explicit `min_ttl` returns a token valid at least this long
    /// (plus the grant's jitter, see [`Broker::default_min_ttl`]).
    pub min_ttl: Duration,
    /// Width of the per-grant jitter added to `min_ttl`, so that tokens issued together do not
    /// all refresh together.
    pub jitter: Duration,
    /// First wait after a transient upstream failure; doubled by each further one.
    pub backoff_base: Duration,
    /// Longest wait (a provider's longer `Retry-After` still wins).
    pub backoff_max: Duration,
    /// Most access tokens kept in memory.
    pub cache_capacity: u64,
    /// Most upstream refreshes in flight at once, across all grants.
    pub refresh_concurrency: usize,
    /// Most upstream refreshes started per second, across all grants (None: no pace).
    pub upstream_rate: Option<f64>,
    /// After a refresh caused by an API's 401, further 401s for the grant within this time
    /// cost no refresh ([`Broker::refresh_after_rejection`] answers None). Zero: none.
    pub rejection_cooldown: Duration,
    /// Where refreshes (outcome, time) and the cache's hits and misses are counted; disabled
    /// by default.
    pub metrics: Metrics,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(300),
            jitter: Duration::from_secs(60),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            cache_capacity: 200_000,
            refresh_concurrency: 64,
            upstream_rate: None,
            rejection_cooldown: Duration::from_secs(30),
            metrics: Metrics::disabled(),
        }
    }
}

/// What a caller needs of a token.
#[derive(Clone, Debug, Default)]
pub struct TokenRequest {
    /// Scopes the token must cover; each must be part of the grant.
    pub scopes: Option<Scopes>,
    /// How long the token must stay valid. Honoured exactly; `0` takes any unexpired token.
    /// None: the configured default with the grant's jitter.
    pub min_ttl: Option<Duration>,
}

/// An access token handed out. `Debug` redacts the token.
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub token: SecretString,
    pub expires_at: OffsetDateTime,
    /// The scopes the token covers: one set shared by every token that covers the same ones.
    pub scopes: Arc<Scopes>,
}

/// Why no token was handed out. Messages never carry a token.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("no such user")]
    UnknownUser,
    #[error("the user has not granted {missing}")]
    ScopeNotGranted { missing: Scopes },
    #[error("no refresh token is held: the user must sign in again and consent")]
    NeedsConsent,
    #[error("the grant was revoked: {reason}")]
    Revoked { reason: String },
    /// A transient upstream failure, or the grant is still backing off after one.
    #[error("the provider is unavailable (retry in {} s): {detail}", retry_after.as_secs())]
    Unavailable {
        retry_after: Duration,
        detail: String,
    },
    /// The provider refused grantkeeper's client (invalid_client, unauthorized_client,
    /// invalid_request, answers outside the protocol): the operator's problem; the grant is
    /// untouched.
    #[error("the provider refused grantkeeper's requests: {detail}")]
    Misconfigured { detail: String },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("vault: {0}")]
    Vault(String),
    /// The vault cannot seal now: its keyring could not be read again for too long
    /// ([`grantkeeper_core::VaultError::KeyringStale`]). Nothing was asked of the provider.
    #[error("the data keys cannot be read now")]
    KeysUnavailable,
}

/// grantkeeper's access-token broker. Cheap to clone; clones share the cache and the locks.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Arc<dyn BrokerStore>,
    provider: Provider,
    vault: VaultHandle,
    clock: SharedClock,
    settings: BrokerSettings,
    cache: TokenCache,
    flights: Flights,
    instances: InstanceLock,
    backoff: Backoffs,
    cooldowns: Cooldowns,
    /// `expires_in` of the provider's last refresh answer, in seconds; 0 until one is seen.
    observed_lifetime: AtomicU64,
    budget: Budget,
    scope_sets: ScopeSets,
}

/// How [`Inner::lease`] ended.
enum Leased {
    /// This instance holds the lease; the grant as read under it.
    Taken(Box<GrantRecord>, InstanceGuard),
    /// Another writer put a token in the grant that answers the demand.
    Written(AccessToken),
}

/// What a caller queued on a grant's lock wants.
enum Demand {
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

impl Broker {
    pub fn new(
        store: Arc<dyn BrokerStore>,
        provider: Provider,
        vault: VaultHandle,
        clock: SharedClock,
        settings: BrokerSettings,
    ) -> Broker {
        let cache = TokenCache::new(settings.cache_capacity, clock.clone());
        let instances = InstanceLock::new(store.clone(), clock.clone());
        let budget = Budget::new(settings.refresh_concurrency, settings.upstream_rate);
        let cooldowns = Cooldowns::new(settings.rejection_cooldown);
        Broker {
            inner: Arc::new(Inner {
                store,
                provider,
                vault,
                clock,
                settings,
                cache,
                flights: Flights::default(),
                instances,
                backoff: Backoffs::default(),
                cooldowns,
                observed_lifetime: AtomicU64::new(0),
                budget,
                scope_sets: ScopeSets::new(),
            }),
        }
    }

    /// A token valid for at least the asked `min_ttl` (explicit: honoured exactly, 0 = any
    /// unexpired token; absent: [`Broker::default_min_ttl`]). When the provider's lifetime
    /// is shorter than an explicit `min_ttl`, a freshly refreshed token is answered anyway
    /// (its `expires_at` tells the truth) rather than refreshing again.
    ///
    /// With the default `min_ttl`, a transient upstream failure (or the backoff after one)
    /// still answers the held token while it is unexpired: the default is the broker's own
    /// margin, not the caller's demand.
    pub async fn access_token(
        &self,
        sub: &str,
        req: &TokenRequest,
    ) -> Result<Arc<AccessToken>, BrokerError> {
        let scopes = req.scopes.clone().unwrap_or_default();
        let need = self.inner.need(sub, req.min_ttl);
        if let Some(t) = self.inner.cache.get(sub)
            && t.scopes.contains_all(&scopes)
            && self.inner.lasts(&t, need)
        {
            tracing::trace!(sub, outcome = "cached", "handed out an access token");
            self.inner.settings.metrics.cache(true);
            return Ok(t);
        }
        self.inner.settings.metrics.cache(false);
        self.inner
            .clone()
            .fly(
                sub,
                Demand::HandOut {
                    scopes,
                    min_ttl: req.min_ttl,
                },
            )
            .await
            .map(Arc::new)
    }

    /// The token held for `grant` (the process's cache, then the one persisted in `grant`) when
    /// it answers `req` without a refresh; None when a hand-out would have to refresh. Never
    /// calls upstream: the job engine asks first, and spends its rate only on the users this
    /// says None for. An explicit `min_ttl` is honoured exactly, as by [`Broker::access_token`].
    pub async fn token_on_hand(
        &self,
        grant: &GrantRecord,
        req: &TokenRequest,
    ) -> Option<Arc<AccessToken>> {
        let sub = grant.sub.as_str();
        if unusable(grant).is_some() {
            return None;
        }
        let scopes = req.scopes.clone().unwrap_or_default();
        let need = self.inner.need(sub, req.min_ttl);
        if let Some(t) = self.inner.cache.get(sub)
            && t.scopes.contains_all(&scopes)
            && self.inner.lasts(&t, need)
        {
            self.inner.settings.metrics.cache(true);
            return Some(t);
        }
        let held = self.inner.persisted(sub, grant).await?;
        if !(held.scopes.contains_all(&scopes) && self.inner.lasts(&held, need)) {
            return None;
        }
        self.inner.cache.insert(sub, held.clone());
        Some(Arc::new(held))
    }

    /// Always refreshes upstream (still single flight: joins a refresh already running). For
    /// `sweep --job refresh`.
    pub async fn refresh_now(&self, sub: &str) -> Result<AccessToken, BrokerError> {
        self.inner.clone().fly(sub, Demand::Refresh).await
    }

    /// The API answered 401 to `rejected`: a token other than `rejected` when one is held, else
    /// a new one from the provider; but within `rejection_cooldown` of the grant's last refresh
    /// for a 401, None when no other token is held: the caller passes the API's 401 on. An
    /// API path that keeps answering 401 costs one refresh per cooldown, not one per call.
    pub async fn refresh_after_rejection(
        &self,
        sub: &str,
        rejected: &SecretString,
    ) -> Result<Option<AccessToken>, BrokerError> {
        if self
            .inner
            .cache
            .get(sub)
            .is_some_and(|t| same(&t.token, rejected))
        {
            self.inner.cache.invalidate(sub);
        }
        if self.inner.cooldowns.cooling(sub, self.inner.clock.now()) {
            let held = self.inner.held_besides(sub, rejected).await?;
            if held.is_none() {
                tracing::info!(
                    sub,
                    outcome = "cooling_down",
                    "the API refused a token of a grant refreshed for a 401 moments ago; \
                     passing its answer on without refreshing again"
                );
            }
            return Ok(held);
        }
        self.inner
            .clone()
            .fly(sub, Demand::Rejected(rejected.clone()))
            .await
            .map(Some)
    }

    /// Revokes the grant at the provider (refresh token, or access token when none), then
    /// marks it revoked with its tokens dropped and forgets it. A transient provider failure
    /// returns [`BrokerError::Unavailable`] and changes nothing; the provider's "already
    /// gone" counts as success. [`Broker::revoke_or_queue`] revokes here whatever the provider
    /// says.
    pub async fn revoke_grant(&self, sub: &str, reason: &str) -> Result<(), BrokerError> {
        self.inner
            .revoke(sub, reason, revocation::OnFailure::ChangeNothing)
            .await
            .map(|_| ())
    }

    /// Drops what the process holds for `sub` (after a revocation, deletion or sign-in
    /// decided elsewhere).
    pub fn forget(&self, sub: &str) {
        self.inner.cache.invalidate(sub);
        self.inner.backoff.clear(sub);
    }

    /// Drops every access token the process holds (drops decided elsewhere may have been
    /// missed); the next hand-out of each grant reads the store again.
    pub fn forget_everything(&self) {
        self.inner.cache.invalidate_all();
    }

    /// The validity a hand-out without an explicit `min_ttl` asks for: `settings.min_ttl`
    /// plus a jitter in `[0, settings.jitter)` that is stable per grant (and the same in every
    /// instance), capped at half the provider's last observed token lifetime so that
    /// short-lived tokens are not refreshed on every call.
    pub fn default_min_ttl(&self, sub: &str) -> Duration {
        self.inner.default_min_ttl(sub)
    }

    /// Refreshes from exactly this snapshot of the grant, as a caller that read it a while ago
    /// would (tests of the `invalid_grant` race). Not an API.
    #[doc(hidden)]
    pub async fn refresh_from_snapshot(
        &self,
        grant: GrantRecord,
    ) -> Result<AccessToken, BrokerError> {
        let sub = grant.sub.clone();
        self.inner
            .clone()
            .fly(&sub, Demand::Snapshot(Box::new(grant)))
            .await
    }
}

/// Compares two tokens. Not constant-time: both come from us or from our own caller.
fn same(a: &SecretString, b: &SecretString) -> bool {
    a.expose_secret() == b.expose_secret()
}

fn remaining(expires_at: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(expires_at - now).unwrap_or(Duration::ZERO)
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
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

/// Why a grant cannot mint tokens, if it cannot.
fn unusable(grant: &GrantRecord) -> Option<BrokerError> {
    if grant.state == GrantState::Revoked {
        return Some(BrokerError::Revoked {
            reason: grant.reason.clone().unwrap_or_else(|| "revoked".to_owned()),
        });
    }
    grant.needs_consent().then_some(BrokerError::NeedsConsent)
}

impl Inner {
    fn default_min_ttl(&self, sub: &str) -> Duration {
        let s = &self.settings;
        let jitter_ms = u64::try_from(s.jitter.as_millis()).unwrap_or(u64::MAX);
        let offset = if jitter_ms == 0 {
            0
        } else {
            stable_hash(sub) % jitter_ms
        };
        let wanted = s.min_ttl.saturating_add(Duration::from_millis(offset));
        match self.observed_lifetime.load(Ordering::Relaxed) {
            0 => wanted,
            lifetime => wanted.min(Duration::from_secs(lifetime) / 2),
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

    fn unexpired(&self, token: &AccessToken) -> bool {
        token.expires_at > self.clock.now()
    }

    fn vault_error(e: grantkeeper_core::VaultError) -> BrokerError {
        match e {
            grantkeeper_core::VaultError::KeyringStale => BrokerError::KeysUnavailable,
            other => BrokerError::Vault(other.to_string()),
        }
    }

    /// Queues on the grant's lock, in a task of its own: a refresh, once sent, is finished and
    /// committed even when the caller gives up waiting (its answer may carry a refresh token
    /// that must not be lost, and the callers queued behind it want its result).
    async fn fly(self: Arc<Self>, sub: &str, demand: Demand) -> Result<AccessToken, BrokerError> {
        let ticket = self.flights.ticket(sub);
        let sub = sub.to_owned();
        let task = tokio::spawn(async move {
            let mut boarded = ticket.board().await;
            self.aboard(&sub, demand, &mut boarded).await
        });
        match task.await {
            Ok(answer) => answer,
            Err(e) => Err(BrokerError::Unavailable {
                retry_after: Duration::from_secs(1),
                detail: format!("the refresh task ended abnormally: {e}"),
            }),
        }
    }

    /// Holding the grant's lock: take what a flight just left, or what is held, or refresh.
    async fn aboard(
        &self,
        sub: &str,
        demand: Demand,
        boarded: &mut flight::Boarded<'_>,
    ) -> Result<AccessToken, BrokerError> {
        match boarded.shared() {
            Some(Landed::Misconfigured(detail)) => {
                return Err(BrokerError::Misconfigured {
                    detail: detail.clone(),
                });
            }
            Some(Landed::Token(t)) if self.takes_fresh(&demand, t) => return Ok(t.clone()),
            _ => {}
        }

        // What this process holds, then what the store holds (a restart, or another
        // instance, may have left a good token there).
        let cached = self.cache.get(sub).map(|t| (*t).clone());
        if let Some(t) = &cached
            && self.satisfies(sub, &demand, t)
        {
            return Ok(t.clone());
        }
        let grant = match demand {
            Demand::Snapshot(ref g) => (**g).clone(),
            _ => self
                .store
                .grant(sub)
                .await?
                .ok_or(BrokerError::UnknownUser)?,
        };
        if let Some(e) = unusable(&grant) {
            self.forget(sub);
            return Err(e);
        }
        if let Demand::HandOut { scopes, .. } = &demand {
            let missing = grant.scopes.missing(scopes);
            if !missing.is_empty() {
                return Err(BrokerError::ScopeNotGranted { missing });
            }
        }
        let persisted = self.persisted(sub, &grant).await;
        if let Some(t) = &persisted
            && self.satisfies(sub, &demand, t)
        {
            self.cache.insert(sub, t.clone());
            return Ok(t.clone());
        }
        // Kept for a failure, when the caller only has the default margin at stake.
        let fallback = match &demand {
            Demand::HandOut {
                scopes,
                min_ttl: None,
            } => [cached, persisted]
                .into_iter()
                .flatten()
                .filter(|t| t.scopes.contains_all(scopes) && self.unexpired(t))
                .max_by_key(|t| t.expires_at),
            _ => None,
        };

        if let Some(wait) = self.backoff.waiting(sub, self.clock.now()) {
            if let Some(t) = fallback {
                return Ok(t);
            }
            tracing::debug!(sub, outcome = "backing_off", "no refresh while backing off");
            return Err(BrokerError::Unavailable {
                retry_after: wait,
                detail: "backing off after upstream failures".to_owned(),
            });
        }

        let answer = match self.lease(sub, &demand, grant).await {
            Ok(Leased::Taken(grant, mut lease)) => {
                let answer = self.refresh(sub, *grant, &mut lease).await;
                lease.release().await;
                if matches!(demand, Demand::Rejected(_)) {
                    self.cooldowns.start(sub, self.clock.now());
                }
                answer
            }
            Ok(Leased::Written(t)) => Ok(t),
            Err(e) => Err(e),
        };
        boarded.land(match &answer {
            Ok(t) => Landed::Token(t.clone()),
            Err(BrokerError::Misconfigured { detail }) => Landed::Misconfigured(detail.clone()),
            Err(_) => Landed::Nothing,
        });
        match (answer, fallback) {
            (Err(BrokerError::Unavailable { .. }), Some(t)) => Ok(t),
            (answer, _) => answer,
        }
    }

    /// Before an upstream call: the grant's refresh lease across instances (invariant 4), with
    /// the grant as it is under it. While another instance holds the lease, nothing is asked
    /// upstream: the grant is re-read every few tens of milliseconds, and a token that instance
    /// writes answers the demand as a flight of this process would. When the lease frees with
    /// no such token (the holder failed or died), this caller takes it and refreshes. A
    /// snapshot refresh waits for the lease but refreshes from its snapshot whatever happened.
    async fn lease(
        &self,
        sub: &str,
        demand: &Demand,
        read: GrantRecord,
    ) -> Result<Leased, BrokerError> {
        let give_up = tokio::time::Instant::now() + flight::LEASE_WAIT;
        let started = Instant::now();
        let mut waited = false;
        loop {
            if let Some((lease, current)) = self.instances.try_acquire_reading(sub).await? {
                if matches!(demand, Demand::Snapshot(_)) {
                    return Ok(Leased::Taken(Box::new(read), lease));
                }
                // The holder before us may have committed between our read and our lease:
                // `current` is read under the lease.
                if let Some(t) = self.written_meanwhile(sub, demand, &read, &current).await? {
                    lease.release().await;
                    return Ok(Leased::Written(t));
                }
                if waited {
                    tracing::info!(
                        sub,
                        waited_ms = elapsed_ms(started),
                        "the other instance's refresh left no token; refreshing here"
                    );
                }
                return Ok(Leased::Taken(Box::new(current), lease));
            }
            if !waited {
                tracing::debug!(
                    sub,
                    "another instance is refreshing this grant; waiting for its token"
                );
                waited = true;
            }
            if tokio::time::Instant::now() >= give_up {
                tracing::warn!(
                    sub,
                    outcome = "lease_held",
                    waited_ms = elapsed_ms(started),
                    "another instance held this grant's refresh lease for longer than a refresh may take"
                );
                return Err(flight::still_held());
            }
            tokio::time::sleep(flight::poll_interval()).await;
            let current = self
                .store
                .grant(sub)
                .await?
                .ok_or(BrokerError::UnknownUser)?;
            if let Some(t) = self.written_meanwhile(sub, demand, &read, &current).await? {
                tracing::info!(
                    sub,
                    outcome = "joined",
                    latency_ms = elapsed_ms(started),
                    "another instance refreshed; using its token"
                );
                return Ok(Leased::Written(t));
            }
        }
    }

    /// The token another writer (an instance holding the lease, a sign-in) put in the grant
    /// since `read`, when it answers `demand` as a flight of this process would; an error when
    /// the grant became unusable meanwhile.
    async fn written_meanwhile(
        &self,
        sub: &str,
        demand: &Demand,
        read: &GrantRecord,
        current: &GrantRecord,
    ) -> Result<Option<AccessToken>, BrokerError> {
        if let Some(e) = unusable(current) {
            self.forget(sub);
            return Err(e);
        }
        if current.access_token == read.access_token {
            return Ok(None);
        }
        let Some(t) = self.persisted(sub, current).await else {
            return Ok(None);
        };
        if !self.takes_fresh(demand, &t) {
            return Ok(None);
        }
        self.cache.insert(sub, t.clone());
        self.backoff.clear(sub);
        Ok(Some(t))
    }

    /// True when a token just refreshed (by a flight of this process, or by another instance)
    /// answers `demand`. Not held to `min_ttl`: when the provider's lifetime is shorter, a
    /// fresh token is the best there is.
    fn takes_fresh(&self, demand: &Demand, t: &AccessToken) -> bool {
        let covers = match demand {
            Demand::HandOut { scopes, .. } => t.scopes.contains_all(scopes),
            Demand::Refresh => true,
            Demand::Rejected(rejected) => !same(&t.token, rejected),
            Demand::Snapshot(_) => false,
        };
        covers && self.unexpired(t)
    }

    /// True when `token`, already held, answers `demand` without a refresh.
    fn satisfies(&self, sub: &str, demand: &Demand, token: &AccessToken) -> bool {
        match demand {
            Demand::HandOut { scopes, min_ttl } => {
                token.scopes.contains_all(scopes) && self.lasts(token, self.need(sub, *min_ttl))
            }
            Demand::Rejected(rejected) => !same(&token.token, rejected) && self.unexpired(token),
            Demand::Refresh | Demand::Snapshot(_) => false,
        }
    }

    /// The access token persisted with the grant, opened (under a key the vault does not hold
    /// yet, after reading the keyring again: another process rotated the keys). One that does
    /// not open is treated as absent: a refresh replaces it.
    async fn persisted(&self, sub: &str, grant: &GrantRecord) -> Option<AccessToken> {
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

    fn forget(&self, sub: &str) {
        self.cache.invalidate(sub);
        self.backoff.clear(sub);
    }

    /// An unexpired token of the grant other than `rejected`, from this process or the store,
    /// without asking the provider.
    async fn held_besides(
        &self,
        sub: &str,
        rejected: &SecretString,
    ) -> Result<Option<AccessToken>, BrokerError> {
        if let Some(t) = self.cache.get(sub)
            && !same(&t.token, rejected)
            && self.unexpired(&t)
        {
            return Ok(Some((*t).clone()));
        }
        let grant = self
            .store
            .grant(sub)
            .await?
            .ok_or(BrokerError::UnknownUser)?;
        if let Some(e) = unusable(&grant) {
            self.forget(sub);
            return Err(e);
        }
        let held = self
            .persisted(sub, &grant)
            .await
            .filter(|t| !same(&t.token, rejected) && self.unexpired(t));
        if let Some(t) = &held {
            self.cache.insert(sub, t.clone());
        }
        Ok(held)
    }

    /// One refresh of `grant` (plus, after an `invalid_grant` caused by a newer refresh token,
    /// one more with that token), holding the grant's `lease`.
    async fn refresh(
        &self,
        sub: &str,
        mut grant: GrantRecord,
        lease: &mut InstanceGuard,
    ) -> Result<AccessToken, BrokerError> {
        let mut raced = false;
        loop {
            let Some(held) = grant.refresh_token.clone() else {
                return Err(unusable(&grant).unwrap_or(BrokerError::NeedsConsent));
            };
            // What the refresh brings must be sealed: a vault that cannot seal now does not ask.
            self.vault.sealer().map_err(Self::vault_error)?;
            let secret = self
                .vault
                .open_secret(&held.sealed, Aad::refresh_token(sub))
                .await
                .map_err(Self::vault_error)?;
            let slot = self.budget.acquire().await;
            if !lease.keep().await? {
                // Waiting for the budget outlasted the lease and another instance took it.
                tracing::info!(
                    sub,
                    outcome = "lease_lost",
                    "lost the grant's refresh lease while waiting for the upstream budget"
                );
                return Err(flight::still_held());
            }
            let started = Instant::now();
            let answer = tokio::time::timeout(REFRESH_TIMEOUT, self.provider.refresh(&secret))
                .await
                .unwrap_or_else(|_| {
                    Err(ProviderError::Unavailable {
                        status: None,
                        detail: format!(
                            "no answer from the token endpoint within {} s",
                            REFRESH_TIMEOUT.as_secs()
                        ),
                        retry_after: None,
                    })
                });
            drop(secret);
            drop(slot);
            let outcome = answer
                .as_ref()
                .map_or_else(ProviderError::outcome, |_| "ok");
            self.settings.metrics.refresh(outcome, started.elapsed());
            match answer {
                Ok(response) => {
                    return self
                        .commit(sub, grant, &held.fingerprint, response, started, lease)
                        .await;
                }
                Err(ProviderError::InvalidGrant { description, .. }) => {
                    let newer = self
                        .after_invalid_grant(sub, &held.fingerprint, &description, started)
                        .await?;
                    if raced {
                        return Err(BrokerError::Unavailable {
                            retry_after: self.settings.backoff_base,
                            detail: "the grant's refresh token keeps changing".to_owned(),
                        });
                    }
                    tracing::info!(
                        sub,
                        outcome = "raced",
                        "invalid_grant for a refresh token replaced meanwhile; retrying with the new one"
                    );
                    raced = true;
                    grant = newer;
                }
                Err(e) if e.is_transient() => {
                    return Err(self.failing(sub, &grant, &e, started).await);
                }
                Err(e @ ProviderError::InvalidClient { .. }) => {
                    // The provider logged this one as an error, with the operator's advice and
                    // the warning counter; here it is only tied to the grant.
                    tracing::info!(
                        sub,
                        outcome = "misconfigured",
                        latency_ms = elapsed_ms(started),
                        "refresh refused for grantkeeper's client credentials (invalid_client); the grant is left as it is"
                    );
                    return Err(BrokerError::Misconfigured {
                        detail: e.to_string(),
                    });
                }
                Err(e) => {
                    tracing::error!(
                        sub,
                        outcome = "misconfigured",
                        latency_ms = elapsed_ms(started),
                        error = %e,
                        "the provider answered the refresh outside the protocol; the grant is left as it is: check the provider configuration"
                    );
                    return Err(BrokerError::Misconfigured {
                        detail: e.to_string(),
                    });
                }
            }
        }
    }

    /// After `invalid_grant` for the refresh token with fingerprint `used`: Ok with the newer
    /// grant to retry with when another instance or a sign-in replaced the token meanwhile (a
    /// race, not a revocation); otherwise the grant is marked revoked and the answer is
    /// [`BrokerError::Revoked`].
    async fn after_invalid_grant(
        &self,
        sub: &str,
        used: &TokenFingerprint,
        description: &str,
        started: Instant,
    ) -> Result<GrantRecord, BrokerError> {
        for _ in 0..FENCE_ATTEMPTS {
            let current = self
                .store
                .grant(sub)
                .await?
                .ok_or(BrokerError::UnknownUser)?;
            if let Some(e) = unusable(&current) {
                self.forget(sub);
                return Err(e);
            }
            if current
                .refresh_token
                .as_ref()
                .is_some_and(|rt| rt.fingerprint.hash != used.hash)
            {
                return Ok(current);
            }
            let now = self.clock.now();
            let age = current.refresh_token_received_at.map(|at| now - at);
            let warning = age.and_then(death_warning);
            // Google says "Token has been expired or revoked." whatever the cause; the token's
            // age is all that tells the likely one apart. A security event that names the
            // cause (RISC) revokes the grant before any refresh finds out, with its own reason.
            let reason = match (age, warning) {
                (Some(age), Some(warning)) => format!(
                    "invalid_grant at refresh: \"{description}\" The refresh token was {:.1} days old: likely {}.",
                    age.as_seconds_f64() / 86_400.0,
                    warning.likely_cause()
                ),
                _ => format!("invalid_grant at refresh: \"{description}\""),
            };
            let update = StateUpdate {
                state: GrantState::Revoked,
                reason: reason.clone(),
                error: Some(reason.clone()),
                drop_tokens: true,
                at: self.clock.now(),
            };
            match self
                .store
                .update_grant_state(sub, Some(current.version), update)
                .await
            {
                Ok(_) => {
                    self.forget(sub);
                    tracing::warn!(
                        sub,
                        outcome = "revoked",
                        latency_ms = elapsed_ms(started),
                        reason = %reason,
                        "the provider declared the grant dead; marked revoked"
                    );
                    if let Some(warning) = warning {
                        self.settings.metrics.warning(warning);
                        tracing::warn!(
                            sub,
                            warning = warning.kind(),
                            token_age_hours = age.map_or(0, |a| a.whole_hours()),
                            "{}",
                            warning.advice()
                        );
                    }
                    return Err(BrokerError::Revoked { reason });
                }
                Err(StoreError::Conflict) => continue,
                Err(StoreError::NotFound) => return Err(BrokerError::UnknownUser),
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict.into())
    }

    /// Seals and persists what a refresh brought (fenced by the version read), then caches it.
    async fn commit(
        &self,
        sub: &str,
        grant: GrantRecord,
        used: &TokenFingerprint,
        response: TokenResponse,
        started: Instant,
        lease: &mut InstanceGuard,
    ) -> Result<AccessToken, BrokerError> {
        if let Ok(secs) = u64::try_from(response.expires_in)
            && secs > 0
        {
            self.observed_lifetime.store(secs, Ordering::Relaxed);
        }
        // Sealed under the keyring held, even one that can no longer be read again: the store
        // refuses a key that is not active, and then the keyring is read and the tokens sealed
        // anew (the refresh is done; what it brought must not be dropped for want of a check).
        let vault = self.vault.get();
        let mut sealed_with = vault.active();
        let mut sealed_access = SealedAccessToken {
            sealed: vault
                .seal_secret(&response.access_token, Aad::access_token(sub))
                .map_err(Self::vault_error)?,
            // Whole seconds, rounded down, as the store keeps times: every instance, and this
            // one after a restart, then sees the same expiry.
            expires_at: response
                .expires_at()
                .replace_nanosecond(0)
                .unwrap_or(response.expires_at()),
        };
        let mut new_refresh = match &response.refresh_token {
            Some(rt) => Some(SealedRefreshToken {
                sealed: vault
                    .seal_secret(rt, Aad::refresh_token(sub))
                    .map_err(Self::vault_error)?,
                fingerprint: fingerprint(rt),
            }),
            None => None,
        };
        let answered_scopes = (!response.scope.is_empty()).then(|| response.scope.clone());
        let token = AccessToken {
            token: response.access_token,
            expires_at: sealed_access.expires_at,
            scopes: self
                .scope_sets
                .share(answered_scopes.as_ref().unwrap_or(&grant.scopes)),
        };

        let mut version = grant.version;
        let mut persisted = false;
        // One more round than the fence needs, for a refusal of the key sealed under.
        for _ in 0..=FENCE_ATTEMPTS {
            let refresh = RefreshSuccess {
                access_token: sealed_access.clone(),
                refresh_token: new_refresh.clone(),
                scopes: answered_scopes.clone(),
                at: self.clock.now(),
            };
            // The lease is given back with the token: the next holder finds it written.
            match lease.record_refresh(version, refresh).await {
                Ok(_) => {
                    persisted = true;
                    break;
                }
                Err(StoreError::Conflict) => {}
                Err(StoreError::NotFound) => return Err(BrokerError::UnknownUser),
                Err(StoreError::InactiveKey) => {
                    // A rotation made another key active since this process read its keyring.
                    if let Some(refused) = sealed_with {
                        self.vault
                            .reload_after_refusal(refused)
                            .await
                            .map_err(Self::vault_error)?;
                    }
                    let vault = self.vault.get();
                    sealed_with = vault.active();
                    sealed_access.sealed = vault
                        .seal_secret(&token.token, Aad::access_token(sub))
                        .map_err(Self::vault_error)?;
                    if let (Some(ours), Some(rt)) =
                        (new_refresh.as_mut(), response.refresh_token.as_ref())
                    {
                        ours.sealed = vault
                            .seal_secret(rt, Aad::refresh_token(sub))
                            .map_err(Self::vault_error)?;
                    }
                    continue;
                }
                Err(e) if new_refresh.is_none() => {
                    // The access token is good; only its persistence failed.
                    tracing::warn!(sub, error = %e, "could not persist a refreshed access token");
                    break;
                }
                Err(e) => return Err(e.into()),
            }
            // Another writer moved the row: a refresh elsewhere, a sign-in, a revocation.
            let current = self
                .store
                .grant(sub)
                .await?
                .ok_or(BrokerError::UnknownUser)?;
            if let Some(e) = unusable(&current) {
                self.forget(sub);
                return Err(e);
            }
            if current
                .refresh_token
                .as_ref()
                .is_some_and(|rt| rt.fingerprint.hash != used.hash)
            {
                // A sign-in brought a newer refresh token: it wins over anything ours brought.
                new_refresh = None;
            }
            // A token written meanwhile is used, as every other instance will; the one read
            // with the grant is not (it is what this refresh replaces).
            if new_refresh.is_none()
                && current.access_token != grant.access_token
                && let Some(theirs) = self.persisted(sub, &current).await
                && self.unexpired(&theirs)
            {
                self.cache.insert(sub, theirs.clone());
                self.backoff.clear(sub);
                tracing::info!(
                    sub,
                    outcome = "raced",
                    latency_ms = elapsed_ms(started),
                    "another writer refreshed first; using its token"
                );
                return Ok(theirs);
            }
            version = current.version;
        }
        if !persisted && new_refresh.is_some() {
            // A refresh token is committed before anything is answered (invariant 1).
            return Err(StoreError::Conflict.into());
        }
        self.cache.insert(sub, token.clone());
        self.backoff.clear(sub);
        tracing::info!(
            sub,
            outcome = "refreshed",
            latency_ms = elapsed_ms(started),
            persisted,
            "refreshed an access token"
        );
        Ok(token)
    }

    /// A transient failure: back off, mark the grant `failing` (never revoked: invariant 3).
    async fn failing(
        &self,
        sub: &str,
        grant: &GrantRecord,
        e: &ProviderError,
        started: Instant,
    ) -> BrokerError {
        let now = self.clock.now();
        let s = &self.settings;
        let wait = self
            .backoff
            .fail(sub, now, e.retry_after(), s.backoff_base, s.backoff_max);
        let update = StateUpdate {
            state: GrantState::Failing,
            reason: "transient upstream failures at refresh".to_owned(),
            error: Some(e.to_string()),
            drop_tokens: false,
            at: now,
        };
        match self
            .store
            .update_grant_state(sub, Some(grant.version), update)
            .await
        {
            // A conflict means somebody else wrote the grant meanwhile; their news is newer.
            Ok(_) | Err(StoreError::Conflict) => {}
            Err(store_error) => {
                tracing::warn!(sub, error = %store_error, "could not record the grant as failing");
            }
        }
        tracing::warn!(
            sub,
            outcome = "failing",
            latency_ms = elapsed_ms(started),
            retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            error = %e,
            "transient failure refreshing an access token; backing off"
        );
        BrokerError::Unavailable {
            retry_after: wait,
            detail: e.to_string(),
        }
    }
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
