//! Revoking a grant at the provider, and what happens when the provider cannot be reached.
//!
//! [`Broker::revoke_grant`] is all or nothing: a provider that cannot be reached (or refuses)
//! leaves the grant as it was. [`Broker::revoke_or_queue`] honours the revocation here at once
//! whatever the provider says: when the provider's revocation does not get through, the token
//! is sealed again for the store's revocation queue and queued in the same transaction that
//! marks the grant revoked, so a grant never looks gone here while its token is neither revoked
//! at the provider nor queued to be. [`retry`] retries the queue (the server runs it as its
//! `revocations` task) with [`revocation_retry_delay`] between attempts.

pub mod retry;

use crate::flight::REFRESH_TIMEOUT;
use crate::refresh::{Engine, Landed, elapsed_ms};
use crate::{Broker, BrokerError};
use grantkeeper_core::{Aad, Backoff, GrantState, Jitter, SecretString, Stopwatch};
use grantkeeper_provider::ProviderError;
use grantkeeper_store::{PendingRevocation, RevocationTokenKind, StateUpdate, StoreError};
use std::time::Duration;

/// How a revocation asked with [`Broker::revoke_or_queue`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevocationOutcome {
    /// Revoked at the provider (or already dead there, or no token was held), and here.
    Revoked,
    /// Revoked here (tokens dropped); the provider's revocation did not get through, so the
    /// token waits in the store's revocation queue for a retry.
    Queued,
}

impl RevocationOutcome {
    /// `revoked` or `queued`, as audit rows and logs say it.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationOutcome::Revoked => "revoked",
            RevocationOutcome::Queued => "queued",
        }
    }
}

/// What the reason of a grant revoked here gets appended when its revocation at the provider
/// is queued.
pub const QUEUED_NOTE: &str = " (revocation at Google queued)";

/// The first wait before retrying a queued revocation.
pub const FIRST_RETRY: Duration = Duration::from_secs(10);
/// The longest wait between two retries (before jitter).
pub const LONGEST_RETRY: Duration = Duration::from_secs(3600);

/// The wait before the next attempt of a queued revocation that has failed `attempts` times
/// since it was queued (0: the wait after the failure that queued it): [`FIRST_RETRY`] doubling
/// up to [`LONGEST_RETRY`], plus up to a quarter of that at random, so that entries queued
/// together (an outage) do not all come due together.
pub fn revocation_retry_delay(attempts: u32) -> Duration {
    let backoff = Backoff {
        first: FIRST_RETRY,
        longest: LONGEST_RETRY,
        jitter: Jitter::UpToAQuarterMore,
    };
    backoff.delay(attempts, grantkeeper_core::random::u64())
}

/// Whether a failure of the provider's revocation changes nothing, or queues the revocation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnFailure {
    ChangeNothing,
    Queue,
}

impl Broker {
    /// Revokes the grant here at once and at the provider as soon as it can be reached.
    ///
    /// Under the grant's lock (no refresh of it runs meanwhile), the provider is asked to
    /// revoke the grant's refresh token (or its access token when none is held). Success, or
    /// the provider's "already gone": the grant is marked revoked with its tokens dropped, and
    /// the answer is [`RevocationOutcome::Revoked`]. Any other failure (a timeout, 5xx, 429;
    /// also a refusal such as `invalid_client`, which the operator may fix later, logged as an
    /// error): the token is sealed under [`Aad::pending_revocation`] and queued, in the one
    /// transaction that marks the grant revoked with its tokens dropped and [`QUEUED_NOTE`]
    /// appended to `reason`; the answer is [`RevocationOutcome::Queued`].
    pub async fn revoke_or_queue(
        &self,
        sub: &str,
        reason: &str,
    ) -> Result<RevocationOutcome, BrokerError> {
        self.inner.revoke(sub, reason, OnFailure::Queue).await
    }
}

impl Engine {
    pub(crate) async fn revoke(
        &self,
        sub: &str,
        reason: &str,
        on_failure: OnFailure,
    ) -> Result<RevocationOutcome, BrokerError> {
        // Under the grant's lock, so that no refresh of it runs meanwhile.
        let ticket = self.flight.ticket(sub);
        let mut boarded = ticket.board().await;
        let lease = self.flight.acquire(sub).await?;
        let started = Stopwatch::start();
        let answer = self.revoke_holding(sub, reason, on_failure, started).await;
        if answer.is_ok() {
            self.forget(sub);
        }
        boarded.land(Landed::Nothing);
        lease.release().await;
        answer
    }

    async fn revoke_holding(
        &self,
        sub: &str,
        reason: &str,
        on_failure: OnFailure,
        started: Stopwatch,
    ) -> Result<RevocationOutcome, BrokerError> {
        let grant = self
            .store
            .grant(sub)
            .await?
            .ok_or(BrokerError::UnknownUser)?;
        let held = match (&grant.refresh_token, &grant.access_token) {
            (Some(rt), _) => Some((
                self.vault
                    .open_secret(&rt.sealed, Aad::refresh_token(sub))
                    .await
                    .map_err(BrokerError::vault)?,
                RevocationTokenKind::Refresh,
            )),
            (None, Some(at)) => self
                .vault
                .open_secret(&at.sealed, Aad::access_token(sub))
                .await
                .ok()
                .map(|token| (token, RevocationTokenKind::Access)),
            (None, None) => None,
        };
        if let Some((token, kind)) = held {
            let answer = tokio::time::timeout(REFRESH_TIMEOUT, self.provider.revoke(&token))
                .await
                .unwrap_or_else(|_| {
                    Err(ProviderError::Unavailable {
                        status: None,
                        detail: format!(
                            "no answer from the revocation endpoint within {} s",
                            REFRESH_TIMEOUT.as_secs()
                        ),
                        retry_after: None,
                    })
                });
            match answer {
                // A dead grant is what we want.
                Ok(()) | Err(ProviderError::InvalidGrant { .. }) => {}
                Err(e) if on_failure == OnFailure::Queue => {
                    return self.queue(sub, reason, &token, kind, &e, started).await;
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(sub, outcome = "unavailable", latency_ms = elapsed_ms(started), error = %e, "could not revoke a grant at the provider");
                    return Err(BrokerError::Unavailable {
                        retry_after: e.retry_after().unwrap_or(self.settings.backoff_base),
                        detail: e.to_string(),
                    });
                }
                Err(e) => {
                    tracing::error!(sub, outcome = "misconfigured", error = %e, "the provider refused grantkeeper's revocation request; the grant is left as it is");
                    return Err(BrokerError::Misconfigured {
                        detail: e.to_string(),
                    });
                }
            }
        }
        let update = StateUpdate {
            state: GrantState::Revoked,
            reason: reason.to_owned(),
            error: None,
            drop_tokens: true,
            at: self.clock.now(),
        };
        match self.store.update_grant_state(sub, None, update).await {
            Ok(_) => {}
            Err(StoreError::NotFound) => return Err(BrokerError::UnknownUser),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(
            sub,
            outcome = "revoked",
            latency_ms = elapsed_ms(started),
            reason,
            "revoked a grant"
        );
        Ok(RevocationOutcome::Revoked)
    }

    /// The provider's revocation of `token` failed with `e`: seal the token for the queue and
    /// queue it with the grant's revocation here, in one transaction.
    async fn queue(
        &self,
        sub: &str,
        reason: &str,
        token: &SecretString,
        kind: RevocationTokenKind,
        e: &ProviderError,
        started: Stopwatch,
    ) -> Result<RevocationOutcome, BrokerError> {
        let id = format!("rev_{}", grantkeeper_core::random::token::<16>());
        let mut refused = false;
        loop {
            let vault = self.vault.get();
            let sealed = vault
                .seal_secret(token, Aad::pending_revocation(&id))
                .map_err(BrokerError::vault)?;
            let now = self.clock.now();
            let entry = PendingRevocation {
                id: id.clone(),
                sub: sub.to_owned(),
                token: sealed,
                token_kind: kind,
                created_at: now,
                attempts: 0,
                next_attempt_at: now + revocation_retry_delay(0),
                last_error: Some(e.to_string()),
            };
            let update = StateUpdate {
                state: GrantState::Revoked,
                reason: format!("{reason}{QUEUED_NOTE}"),
                error: Some(format!("revocation at the provider failed: {e}")),
                drop_tokens: true,
                at: now,
            };
            match self
                .store
                .enqueue_revocation_with_state(entry, update)
                .await
            {
                Ok(_) => break,
                // A rotation made another key active since this process read its keyring:
                // read it again and seal anew, once.
                Err(StoreError::InactiveKey) if !refused => {
                    refused = true;
                    if let Some(key) = vault.active() {
                        self.vault
                            .reload_after_refusal(key)
                            .await
                            .map_err(BrokerError::vault)?;
                    }
                }
                Err(StoreError::NotFound) => return Err(BrokerError::UnknownUser),
                Err(e) => return Err(e.into()),
            }
        }
        if e.is_transient() {
            tracing::warn!(
                sub,
                revocation = %id,
                outcome = "queued",
                latency_ms = elapsed_ms(started),
                error = %e,
                "the provider could not be reached to revoke a grant; revoked here and queued the revocation for a retry"
            );
        } else {
            tracing::error!(
                sub,
                revocation = %id,
                outcome = "queued",
                latency_ms = elapsed_ms(started),
                error = %e,
                "the provider refused grantkeeper's revocation request; revoked here and queued the revocation for a retry: fix the provider configuration"
            );
        }
        Ok(RevocationOutcome::Queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_ten_seconds_to_an_hour_with_jitter() {
        for _ in 0..50 {
            let first = revocation_retry_delay(0);
            assert!(first >= FIRST_RETRY && first <= FIRST_RETRY + FIRST_RETRY / 4);
            let third = revocation_retry_delay(2);
            assert!(third >= Duration::from_secs(40) && third <= Duration::from_secs(50));
            for attempts in [9, 30, u32::MAX] {
                let late = revocation_retry_delay(attempts);
                assert!(late >= LONGEST_RETRY && late <= LONGEST_RETRY + LONGEST_RETRY / 4);
            }
        }
        assert_eq!(RevocationOutcome::Queued.as_str(), "queued");
        assert_eq!(RevocationOutcome::Revoked.as_str(), "revoked");
    }
}
