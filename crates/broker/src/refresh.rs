//! The refresh engine: one refresh of a grant, from the queue to the committed token.
//!
//! Owns: the flight of a caller (queue on the grant's lock, take what the flight before left,
//! else what is held, else the grant's lease across instances and a refresh), the exchange at
//! the token endpoint with its outcomes (a token; `invalid_grant`, after ruling out a race with
//! a newer refresh token, marks the grant revoked; a transient failure backs off and marks it
//! `failing`; a refusal of grantkeeper's client changes nothing), and the fenced commit of what
//! a refresh brought (sealed, persisted while giving the lease back, then kept).
//!
//! Leaves to others: which held token answers a demand (the hand-out policy, [`HandOut`]),
//! queueing and leasing ([`SingleFlight`], which it calls and which calls nothing back),
//! the protocol (the provider) and fencing (the store).

use crate::backoff::Backoffs;
use crate::budget::Budget;
use crate::cooldown::Cooldowns;
use crate::flight::{self, Boarded, InstanceGuard, REFRESH_TIMEOUT, SingleFlight, Turn};
use crate::handout::{Demand, HandOut, same, unusable};
use crate::{AccessToken, BrokerError, BrokerSettings};
use grantkeeper_core::metrics::Warning;
use grantkeeper_core::{
    Aad, GrantState, KeyId, Scopes, SecretString, SharedClock, Stopwatch, Vault, VaultHandle,
    fingerprint,
};
use grantkeeper_provider::{Provider, ProviderError, TokenResponse};
use grantkeeper_store::{
    BrokerStore, GrantRecord, RefreshSuccess, SealedAccessToken, SealedRefreshToken, StateUpdate,
    StoreError, TokenFingerprint,
};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// How often a fenced write is retried after the row moved under it.
const FENCE_ATTEMPTS: usize = 3;

/// A refresh token that dies at an age in this range (in hours) most likely met the 7-day
/// expiry of apps in the Testing publishing status: from 6.5 days (the expiry is counted from
/// consent, a little before grantkeeper received the token) to 8 days (a grant nobody asked a
/// token for in the day after it died).
const TESTING_EXPIRY_HOURS: std::ops::Range<i64> = 156..192;

/// What a finished flight leaves for the callers that waited on it.
#[derive(Clone)]
pub(crate) enum Landed {
    /// The refresh succeeded: everybody waiting takes this token.
    Token(AccessToken),
    /// The provider refused grantkeeper's client: asking again for each waiter would only
    /// repeat the refusal.
    Misconfigured(String),
    /// Anything else: waiters find the consequence themselves (backoff, revoked state).
    Nothing,
}

/// How [`Engine::lease`] ended.
enum Leased {
    /// This instance holds the lease; the grant as read under it.
    Taken(Box<GrantRecord>, InstanceGuard),
    /// Another writer put a token in the grant that answers the demand.
    Written(AccessToken),
}

/// A refresh being committed: the grant it replaces, and what it brought.
struct Commit<'a> {
    sub: &'a str,
    grant: &'a GrantRecord,
    /// The fingerprint of the refresh token used.
    used: &'a TokenFingerprint,
    response: &'a TokenResponse,
    started: Stopwatch,
}

/// What a refresh brought, sealed for the grant's row.
struct Sealed {
    access: SealedAccessToken,
    /// None when the provider sent no new refresh token, or when a newer one won meanwhile.
    refresh: Option<SealedRefreshToken>,
    /// The scopes the provider answered with, when it named them.
    scopes: Option<Scopes>,
    /// The data key they are sealed under.
    with: Option<KeyId>,
}

/// How a fenced write of a refresh ended.
enum Committed {
    /// Our token is the grant's (`persisted`: written; false only for an access token whose
    /// write failed, which is still good to answer).
    Ours { persisted: bool },
    /// Another writer refreshed first; its token answers.
    Theirs(AccessToken),
}

/// What the grant, read again after the fence refused a write, says to do.
enum Moved {
    /// Another writer's token answers.
    Theirs(AccessToken),
    /// Write again, fenced by this version.
    Retry(i64),
}

/// The refresh engine of one broker (and the revocation, which queues on the same flight).
pub(crate) struct Engine {
    pub(crate) store: Arc<dyn BrokerStore>,
    pub(crate) provider: Provider,
    pub(crate) vault: VaultHandle,
    pub(crate) clock: SharedClock,
    pub(crate) settings: BrokerSettings,
    pub(crate) handout: HandOut,
    pub(crate) flight: SingleFlight<Landed>,
    backoff: Backoffs,
    cooldowns: Cooldowns,
    budget: Budget,
}

impl Engine {
    pub(crate) fn new(
        store: Arc<dyn BrokerStore>,
        provider: Provider,
        vault: VaultHandle,
        clock: SharedClock,
        settings: BrokerSettings,
    ) -> Engine {
        Engine {
            handout: HandOut::new(&settings, clock.clone(), vault.clone()),
            flight: SingleFlight::new(store.clone(), clock.clone()),
            budget: Budget::new(
                settings.refresh_concurrency,
                settings.upstream_rate,
                clock.clone(),
            ),
            cooldowns: Cooldowns::new(settings.rejection_cooldown),
            backoff: Backoffs::default(),
            store,
            provider,
            vault,
            clock,
            settings,
        }
    }

    /// Drops what the process holds for `sub`: its token and its backoff.
    pub(crate) fn forget(&self, sub: &str) {
        self.handout.drop_held(sub);
        self.backoff.clear(sub);
    }

    /// Queues on the grant's lock, in a task of its own: a refresh, once sent, is finished and
    /// committed even when the caller gives up waiting (its answer may carry a refresh token
    /// that must not be lost, and the callers queued behind it want its result).
    pub(crate) async fn fly(
        self: Arc<Self>,
        sub: &str,
        demand: Demand,
    ) -> Result<AccessToken, BrokerError> {
        let ticket = self.flight.ticket(sub);
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

    /// See [`crate::Broker::refresh_after_rejection`].
    pub(crate) async fn after_rejection(
        self: Arc<Self>,
        sub: &str,
        rejected: &SecretString,
    ) -> Result<Option<AccessToken>, BrokerError> {
        if self
            .handout
            .cached_any(sub)
            .is_some_and(|t| same(&t.token, rejected))
        {
            self.handout.drop_held(sub);
        }
        if self.cooldowns.cooling(sub, self.clock.now()) {
            let held = self.held_besides(sub, rejected).await?;
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
        self.fly(sub, Demand::Rejected(rejected.clone()))
            .await
            .map(Some)
    }

    /// Holding the grant's lock: take what a flight just left, or what is held, or refresh.
    async fn aboard(
        &self,
        sub: &str,
        demand: Demand,
        boarded: &mut Boarded<'_, Landed>,
    ) -> Result<AccessToken, BrokerError> {
        match boarded.shared() {
            Some(Landed::Misconfigured(detail)) => {
                return Err(BrokerError::Misconfigured {
                    detail: detail.clone(),
                });
            }
            Some(Landed::Token(t)) if self.handout.takes_fresh(&demand, t) => {
                return Ok(t.clone());
            }
            _ => {}
        }

        // What this process holds, then what the store holds (a restart, or another
        // instance, may have left a good token there).
        let cached = self.handout.cached_any(sub).map(|t| (*t).clone());
        if let Some(t) = &cached
            && self.handout.satisfies(sub, &demand, t)
        {
            return Ok(t.clone());
        }
        let grant = match demand {
            Demand::Snapshot(ref g) => (**g).clone(),
            _ => self.grant(sub).await?,
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
        let persisted = self.handout.persisted(sub, &grant).await;
        if let Some(t) = &persisted
            && self.handout.satisfies(sub, &demand, t)
        {
            self.handout.keep(sub, t.clone());
            return Ok(t.clone());
        }
        // Kept for a failure, when the caller only has the default margin at stake.
        let fallback = self.handout.fallback(&demand, [cached, persisted]);

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

        let answer = self.lease_and_refresh(sub, &demand, grant).await;
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

    /// The grant's lease, then a refresh under it unless another writer answered meanwhile.
    async fn lease_and_refresh(
        &self,
        sub: &str,
        demand: &Demand,
        grant: GrantRecord,
    ) -> Result<AccessToken, BrokerError> {
        match self.lease(sub, demand, grant).await? {
            Leased::Taken(grant, mut lease) => {
                let answer = self.refresh(sub, *grant, &mut lease).await;
                lease.release().await;
                if matches!(demand, Demand::Rejected(_)) {
                    self.cooldowns.start(sub, self.clock.now());
                }
                answer
            }
            Leased::Written(t) => Ok(t),
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
        let mut wait = self.flight.wait_for_lease(sub);
        loop {
            match wait.next().await? {
                Turn::Mine(lease, _) if matches!(demand, Demand::Snapshot(_)) => {
                    return Ok(Leased::Taken(Box::new(read), lease));
                }
                Turn::Mine(lease, current) => {
                    // The holder before us may have committed between our read and our
                    // lease: `current` is read under the lease.
                    if let Some(t) = self.written_meanwhile(sub, demand, &read, &current).await? {
                        lease.release().await;
                        return Ok(Leased::Written(t));
                    }
                    if wait.waited() {
                        tracing::info!(
                            sub,
                            waited_ms = wait.waited_ms(),
                            "the other instance's refresh left no token; refreshing here"
                        );
                    }
                    return Ok(Leased::Taken(current, lease));
                }
                Turn::Elsewhere(current) => {
                    if let Some(t) = self.written_meanwhile(sub, demand, &read, &current).await? {
                        tracing::info!(
                            sub,
                            outcome = "joined",
                            latency_ms = wait.waited_ms(),
                            "another instance refreshed; using its token"
                        );
                        return Ok(Leased::Written(t));
                    }
                }
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
        let Some(t) = self.handout.persisted(sub, current).await else {
            return Ok(None);
        };
        if !self.handout.takes_fresh(demand, &t) {
            return Ok(None);
        }
        self.handout.keep(sub, t.clone());
        self.backoff.clear(sub);
        Ok(Some(t))
    }

    /// An unexpired token of the grant other than `rejected`, from this process or the store,
    /// without asking the provider.
    async fn held_besides(
        &self,
        sub: &str,
        rejected: &SecretString,
    ) -> Result<Option<AccessToken>, BrokerError> {
        if let Some(t) = self.handout.cached_any(sub)
            && !same(&t.token, rejected)
            && self.handout.unexpired(&t)
        {
            return Ok(Some((*t).clone()));
        }
        let grant = self.grant(sub).await?;
        if let Some(e) = unusable(&grant) {
            self.forget(sub);
            return Err(e);
        }
        let held = self
            .handout
            .persisted(sub, &grant)
            .await
            .filter(|t| !same(&t.token, rejected) && self.handout.unexpired(t));
        if let Some(t) = &held {
            self.handout.keep(sub, t.clone());
        }
        Ok(held)
    }

    /// The grant of `sub` as the store holds it now.
    async fn grant(&self, sub: &str) -> Result<GrantRecord, BrokerError> {
        self.store.grant(sub).await?.ok_or(BrokerError::UnknownUser)
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
            let (started, answer) = self.exchange(sub, &held, lease).await?;
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
                Err(e) => return Err(misconfigured(sub, &e, started)),
            }
        }
    }

    /// Asks the token endpoint for a new access token with the refresh token `held`, within
    /// the upstream budget and [`REFRESH_TIMEOUT`], while the lease is still ours; with when
    /// it was asked. The outer error: nothing was asked.
    async fn exchange(
        &self,
        sub: &str,
        held: &SealedRefreshToken,
        lease: &mut InstanceGuard,
    ) -> Result<(Stopwatch, Result<TokenResponse, ProviderError>), BrokerError> {
        // What the refresh brings must be sealed: a vault that cannot seal now does not ask.
        self.vault.sealer().map_err(BrokerError::vault)?;
        let secret = self
            .vault
            .open_secret(&held.sealed, Aad::refresh_token(sub))
            .await
            .map_err(BrokerError::vault)?;
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
        let started = Stopwatch::start();
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
        Ok((started, answer))
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
        started: Stopwatch,
    ) -> Result<GrantRecord, BrokerError> {
        for _ in 0..FENCE_ATTEMPTS {
            let current = self.grant(sub).await?;
            if let Some(e) = unusable(&current) {
                self.forget(sub);
                return Err(e);
            }
            if replaced(&current, used) {
                return Ok(current);
            }
            let now = self.clock.now();
            let age = current.refresh_token_received_at.map(|at| now - at);
            let warning = age.and_then(death_warning);
            let reason = death_reason(description, age, warning);
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

    /// Seals and persists what a refresh brought (fenced by the version read, giving the lease
    /// back with it), then keeps it.
    async fn commit(
        &self,
        sub: &str,
        grant: GrantRecord,
        used: &TokenFingerprint,
        response: TokenResponse,
        started: Stopwatch,
        lease: &mut InstanceGuard,
    ) -> Result<AccessToken, BrokerError> {
        self.handout.observe_lifetime(response.expires_in);
        // Sealed under the keyring held, even one that can no longer be read again: the store
        // refuses a key that is not active, and then the keyring is read and the tokens sealed
        // anew (the refresh is done; what it brought must not be dropped for want of a check).
        let mut sealed = Sealed::new(&self.vault.get(), sub, &response)?;
        let token = AccessToken {
            token: response.access_token.clone(),
            expires_at: sealed.access.expires_at,
            scopes: self
                .handout
                .share(sealed.scopes.as_ref().unwrap_or(&grant.scopes)),
        };
        let commit = Commit {
            sub,
            grant: &grant,
            used,
            response: &response,
            started,
        };
        let persisted = match self.write_fenced(&commit, &mut sealed, lease).await? {
            Committed::Theirs(theirs) => return Ok(theirs),
            Committed::Ours { persisted } => persisted,
        };
        self.handout.keep(sub, token.clone());
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

    /// Writes `sealed` into the grant, fenced by its version: after the row moved, with the
    /// version read again (unless another writer's token answers); after the store refused the
    /// key sealed under, sealed anew under the keyring read again.
    async fn write_fenced(
        &self,
        commit: &Commit<'_>,
        sealed: &mut Sealed,
        lease: &mut InstanceGuard,
    ) -> Result<Committed, BrokerError> {
        let sub = commit.sub;
        let mut version = commit.grant.version;
        // One more round than the fence needs, for a refusal of the key sealed under.
        for _ in 0..=FENCE_ATTEMPTS {
            let refresh = RefreshSuccess {
                access_token: sealed.access.clone(),
                refresh_token: sealed.refresh.clone(),
                scopes: sealed.scopes.clone(),
                at: self.clock.now(),
            };
            // The lease is given back with the token: the next holder finds it written.
            match lease.record_refresh(version, refresh).await {
                Ok(_) => return Ok(Committed::Ours { persisted: true }),
                Err(StoreError::Conflict) => {}
                Err(StoreError::NotFound) => return Err(BrokerError::UnknownUser),
                Err(StoreError::InactiveKey) => {
                    // A rotation made another key active since this process read its keyring.
                    self.reseal(sub, sealed, commit.response).await?;
                    continue;
                }
                Err(e) if sealed.refresh.is_none() => {
                    // The access token is good; only its persistence failed.
                    tracing::warn!(sub, error = %e, "could not persist a refreshed access token");
                    return Ok(Committed::Ours { persisted: false });
                }
                Err(e) => return Err(e.into()),
            }
            match self.moved(commit, sealed).await? {
                Moved::Theirs(theirs) => return Ok(Committed::Theirs(theirs)),
                Moved::Retry(current) => version = current,
            }
        }
        if sealed.refresh.is_some() {
            // A refresh token is committed before anything is answered (invariant 1).
            return Err(StoreError::Conflict.into());
        }
        Ok(Committed::Ours { persisted: false })
    }

    /// The store refused the key `sealed` is sealed under: reads the keyring again and seals
    /// anew under its active key.
    async fn reseal(
        &self,
        sub: &str,
        sealed: &mut Sealed,
        response: &TokenResponse,
    ) -> Result<(), BrokerError> {
        if let Some(refused) = sealed.with {
            self.vault
                .reload_after_refusal(refused)
                .await
                .map_err(BrokerError::vault)?;
        }
        sealed.reseal(&self.vault.get(), sub, response)
    }

    /// Another writer moved the row under a fenced write (a refresh elsewhere, a sign-in, a
    /// revocation): what the grant holds now decides.
    async fn moved(&self, commit: &Commit<'_>, sealed: &mut Sealed) -> Result<Moved, BrokerError> {
        let Commit {
            sub,
            grant,
            used,
            started,
            ..
        } = *commit;
        let current = self.grant(sub).await?;
        if let Some(e) = unusable(&current) {
            self.forget(sub);
            return Err(e);
        }
        if replaced(&current, used) {
            // A sign-in brought a newer refresh token: it wins over anything ours brought.
            sealed.refresh = None;
        }
        // A token written meanwhile is used, as every other instance will; the one read
        // with the grant is not (it is what this refresh replaces).
        if sealed.refresh.is_none()
            && current.access_token != grant.access_token
            && let Some(theirs) = self.handout.persisted(sub, &current).await
            && self.handout.unexpired(&theirs)
        {
            self.handout.keep(sub, theirs.clone());
            self.backoff.clear(sub);
            tracing::info!(
                sub,
                outcome = "raced",
                latency_ms = elapsed_ms(started),
                "another writer refreshed first; using its token"
            );
            return Ok(Moved::Theirs(theirs));
        }
        Ok(Moved::Retry(current.version))
    }

    /// A transient failure: back off, mark the grant `failing` (never revoked: invariant 3).
    async fn failing(
        &self,
        sub: &str,
        grant: &GrantRecord,
        e: &ProviderError,
        started: Stopwatch,
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

impl Sealed {
    /// Seals what `response` brought under the active key of `vault`.
    fn new(vault: &Vault, sub: &str, response: &TokenResponse) -> Result<Sealed, BrokerError> {
        let access = SealedAccessToken {
            sealed: vault
                .seal_secret(&response.access_token, Aad::access_token(sub))
                .map_err(BrokerError::vault)?,
            // Whole seconds, rounded down, as the store keeps times: every instance, and this
            // one after a restart, then sees the same expiry.
            expires_at: whole_seconds(response.expires_at()),
        };
        let refresh = match &response.refresh_token {
            Some(rt) => Some(SealedRefreshToken {
                sealed: vault
                    .seal_secret(rt, Aad::refresh_token(sub))
                    .map_err(BrokerError::vault)?,
                fingerprint: fingerprint(rt),
            }),
            None => None,
        };
        Ok(Sealed {
            access,
            refresh,
            scopes: (!response.scope.is_empty()).then(|| response.scope.clone()),
            with: vault.active(),
        })
    }

    /// Seals the same tokens again under the active key of `vault` (a refresh token that lost
    /// to a newer one stays dropped).
    fn reseal(
        &mut self,
        vault: &Vault,
        sub: &str,
        response: &TokenResponse,
    ) -> Result<(), BrokerError> {
        self.with = vault.active();
        self.access.sealed = vault
            .seal_secret(&response.access_token, Aad::access_token(sub))
            .map_err(BrokerError::vault)?;
        if let (Some(ours), Some(rt)) = (self.refresh.as_mut(), response.refresh_token.as_ref()) {
            ours.sealed = vault
                .seal_secret(rt, Aad::refresh_token(sub))
                .map_err(BrokerError::vault)?;
        }
        Ok(())
    }
}

fn whole_seconds(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(0).unwrap_or(at)
}

/// Whether the grant holds a refresh token other than the one with fingerprint `used`.
fn replaced(grant: &GrantRecord, used: &TokenFingerprint) -> bool {
    grant
        .refresh_token
        .as_ref()
        .is_some_and(|rt| rt.fingerprint.hash != used.hash)
}

/// The provider refused grantkeeper's client, or answered outside the protocol: the grant is
/// left as it is.
fn misconfigured(sub: &str, e: &ProviderError, started: Stopwatch) -> BrokerError {
    if let ProviderError::InvalidClient { .. } = e {
        // The provider logged this one as an error, with the operator's advice and the
        // warning counter; here it is only tied to the grant.
        tracing::info!(
            sub,
            outcome = "misconfigured",
            latency_ms = elapsed_ms(started),
            "refresh refused for grantkeeper's client credentials (invalid_client); the grant is left as it is"
        );
    } else {
        tracing::error!(
            sub,
            outcome = "misconfigured",
            latency_ms = elapsed_ms(started),
            error = %e,
            "the provider answered the refresh outside the protocol; the grant is left as it is: check the provider configuration"
        );
    }
    BrokerError::Misconfigured {
        detail: e.to_string(),
    }
}

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

/// The reason a grant whose refresh token died is marked revoked with. Google says "Token has
/// been expired or revoked." whatever the cause; the token's age is all that tells the likely
/// one apart. A security event that names the cause (RISC) revokes the grant before any
/// refresh finds out, with its own reason.
fn death_reason(
    description: &str,
    age: Option<time::Duration>,
    warning: Option<Warning>,
) -> String {
    match (age, warning) {
        (Some(age), Some(warning)) => format!(
            "invalid_grant at refresh: \"{description}\" The refresh token was {:.1} days old: likely {}.",
            age.as_seconds_f64() / 86_400.0,
            warning.likely_cause()
        ),
        _ => format!("invalid_grant at refresh: \"{description}\""),
    }
}

pub(crate) fn elapsed_ms(started: Stopwatch) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
