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
mod handout;
pub mod jobs;
mod refresh;
pub mod revocation;
pub mod sweep;

pub use revocation::{
    FIRST_RETRY, LONGEST_RETRY, QUEUED_NOTE, RevocationOutcome, revocation_retry_delay,
};

use crate::handout::Demand;
use crate::refresh::Engine;
use grantkeeper_core::{Metrics, Scopes, SecretString, SharedClock, VaultError, VaultHandle};
use grantkeeper_provider::Provider;
use grantkeeper_store::{BrokerStore, GrantRecord, StoreError};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

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

impl BrokerError {
    /// The vault's failure as the broker's: a keyring that cannot be read now is its own case.
    pub(crate) fn vault(e: VaultError) -> BrokerError {
        match e {
            VaultError::KeyringStale => BrokerError::KeysUnavailable,
            other => BrokerError::Vault(other.to_string()),
        }
    }
}

/// grantkeeper's access-token broker. Cheap to clone; clones share the cache and the locks.
///
/// A façade: the hand-out policy ([`handout`]) says which held token answers a caller; the
/// refresh engine ([`refresh`]) gets a new one through the single flight ([`flight`]).
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Engine>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl Broker {
    pub fn new(
        store: Arc<dyn BrokerStore>,
        provider: Provider,
        vault: VaultHandle,
        clock: SharedClock,
        settings: BrokerSettings,
    ) -> Broker {
        Broker {
            inner: Arc::new(Engine::new(store, provider, vault, clock, settings)),
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
        if let Some(t) = self.inner.handout.cached(sub, &scopes, req.min_ttl, true) {
            tracing::trace!(sub, outcome = "cached", "handed out an access token");
            return Ok(t);
        }
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
        let scopes = req.scopes.clone().unwrap_or_default();
        self.inner
            .handout
            .on_hand(grant, &scopes, req.min_ttl)
            .await
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
        self.inner.clone().after_rejection(sub, rejected).await
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
        self.inner.forget(sub);
    }

    /// Drops every access token the process holds (drops decided elsewhere may have been
    /// missed); the next hand-out of each grant reads the store again.
    pub fn forget_everything(&self) {
        self.inner.handout.drop_all();
    }

    /// The validity a hand-out without an explicit `min_ttl` asks for: `settings.min_ttl`
    /// plus a jitter in `[0, settings.jitter)` that is stable per grant (and the same in every
    /// instance), capped at half the provider's last observed token lifetime so that
    /// short-lived tokens are not refreshed on every call.
    pub fn default_min_ttl(&self, sub: &str) -> Duration {
        self.inner.handout.default_min_ttl(sub)
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
