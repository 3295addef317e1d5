//! Retries the revocations at the provider that did not get through.
//!
//! When a user disconnects, is deleted, or has their grant revoked by an operator while the
//! provider cannot be reached (or refuses), the broker revokes the grant here at once and
//! queues its token in the store's revocation queue ([`crate::Broker::revoke_or_queue`]).
//! Every server app runs a task (its `revocations` worker, started by the server) that looks at
//! the queue every [`POLL_EVERY`] (and once more when told to stop): each
//! due entry's token is opened and revoked at the provider; success, or the provider's "already
//! dead", removes the entry; any failure counts the attempt and schedules the next one after
//! [`revocation_retry_delay`] (10 s doubling to an hour, with jitter). It
//! never gives up: a token must not stay live at the provider because an outage lasted long.
//! Failures are logged at warn level, at error level once an entry has waited
//! [`ALARM_AFTER`] or when the provider refuses grantkeeper's request (its configuration needs
//! fixing). Nothing logged carries a token: entries are named by their id and `sub`.
//!
//! Every instance on a store runs this task, so several may read the same due entry and revoke
//! its token at about the same time. That is harmless: revoking a token twice is fine (the
//! provider answers the second as already revoked), and the bookkeeping of the slower one finds
//! the entry gone and leaves it at that. A short-lived process that queues entries (the
//! `grantkeeper users revoke` command) leaves them to the running servers.
//!
//! The task holds the retrier weakly, and ends once told to stop or once the app is gone.
//!
//! Here, beside the revocation that queues the entries, so that what a queued entry holds and
//! how it is retried are read in one place; the server only starts [`run`] and stops it.

use super::revocation_retry_delay;
use futures_util::StreamExt;
use grantkeeper_core::{Aad, Metrics, SharedClock, VaultHandle};
use grantkeeper_provider::{Provider, ProviderError};
use grantkeeper_store::{PendingRevocation, RevocationQueueStore, StoreError};
use std::sync::{Arc, Weak};
use std::time::Duration;
use time::macros::datetime;
use tokio::sync::watch;
use tokio::time::{MissedTickBehavior, interval};

/// How often the queue is looked at.
pub const POLL_EVERY: Duration = Duration::from_secs(5);
/// How long an entry may wait before its failures are logged as errors.
pub const ALARM_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Most entries retried in one pass.
const BATCH: u32 = 100;
/// Most revocations in flight at once in one pass.
const CONCURRENCY: usize = 8;
/// Longest a revocation may take, whatever the HTTP client's own timeouts.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Which queued entries a pass retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// Those whose next attempt is due now.
    Due,
    /// Every entry, whenever its next attempt was to be (an operator's or a test's "now").
    All,
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryPass {
    /// Entries whose token is now revoked at the provider (and removed from the queue).
    pub revoked: usize,
    /// Entries whose retry failed again (scheduled once more).
    pub failed: usize,
    /// Entries left in the queue after the pass.
    pub pending: u64,
}

/// Retries the queued revocations of one process.
pub struct RevocationRetrier {
    store: Arc<dyn RevocationQueueStore>,
    provider: Provider,
    vault: VaultHandle,
    clock: SharedClock,
    metrics: Metrics,
    /// One pass at a time (the task's and explicit ones).
    retrying: tokio::sync::Mutex<()>,
}

/// How one entry's retry ended.
enum Retried {
    Revoked,
    Failed,
}

impl RevocationRetrier {
    /// A retrier; [`run`] retries through it in the background.
    pub fn new(
        store: Arc<dyn RevocationQueueStore>,
        provider: Provider,
        vault: VaultHandle,
        clock: SharedClock,
        metrics: Metrics,
    ) -> Arc<RevocationRetrier> {
        Arc::new(RevocationRetrier {
            store,
            provider,
            vault,
            clock,
            metrics,
            retrying: tokio::sync::Mutex::new(()),
        })
    }

    /// Retries the entries `which` names (at most [`BATCH`] of them, the longest due first),
    /// then reads how many are left into the `grantkeeper_pending_revocations` gauge.
    pub async fn retry(&self, which: Which) -> Result<RetryPass, StoreError> {
        let _one_at_a_time = self.retrying.lock().await;
        let now = self.clock.now();
        let until = match which {
            Which::Due => now,
            Which::All => datetime!(9999-12-31 23:59:59 UTC),
        };
        let due = self.store.due_revocations(until, BATCH).await?;
        let mut pass = RetryPass::default();
        let mut outcomes = futures_util::stream::iter(due)
            .map(|entry| async move { self.retry_one(entry).await })
            .buffer_unordered(CONCURRENCY);
        while let Some(outcome) = outcomes.next().await {
            match outcome {
                Retried::Revoked => pass.revoked += 1,
                Retried::Failed => pass.failed += 1,
            }
        }
        pass.pending = self.store.count_revocations().await?;
        self.metrics.pending_revocations(pass.pending);
        Ok(pass)
    }

    async fn retry_one(&self, entry: PendingRevocation) -> Retried {
        let token = match self
            .vault
            .open_secret(&entry.token, Aad::pending_revocation(&entry.id))
            .await
        {
            Ok(token) => token,
            Err(e) => {
                let error = format!("the queued token does not open: {e}");
                self.failed(&entry, &error, true).await;
                return Retried::Failed;
            }
        };
        let answer = tokio::time::timeout(REVOKE_TIMEOUT, self.provider.revoke(&token))
            .await
            .unwrap_or_else(|_| {
                Err(ProviderError::Unavailable {
                    status: None,
                    detail: format!(
                        "no answer from the revocation endpoint within {} s",
                        REVOKE_TIMEOUT.as_secs()
                    ),
                    retry_after: None,
                })
            });
        drop(token);
        match answer {
            // Revoked now, or dead already (revoked by the user at Google, or by another
            // instance's retry of this same entry): either way nothing is live any more.
            Ok(()) | Err(ProviderError::InvalidGrant { .. }) => {
                match self.store.delete_revocation(&entry.id).await {
                    Ok(_) => tracing::info!(
                        sub = %entry.sub,
                        revocation = %entry.id,
                        attempts = entry.attempts + 1,
                        outcome = "revoked",
                        "revoked a queued token at the provider"
                    ),
                    // Revoking again on the next pass is harmless.
                    Err(e) => tracing::warn!(
                        sub = %entry.sub,
                        revocation = %entry.id,
                        error = %e,
                        "revoked a queued token at the provider, but could not remove it from the queue"
                    ),
                }
                Retried::Revoked
            }
            Err(e) => {
                self.failed(&entry, &e.to_string(), !e.is_transient()).await;
                Retried::Failed
            }
        }
    }

    /// Counts a failed attempt and schedules the next one. `refused`: the failure is not the
    /// provider's outage but something an operator must fix, logged as an error at once.
    async fn failed(&self, entry: &PendingRevocation, error: &str, refused: bool) {
        let now = self.clock.now();
        let wait = revocation_retry_delay(entry.attempts.saturating_add(1));
        let attempts = entry.attempts.saturating_add(1);
        let waited = Duration::try_from(now - entry.created_at).unwrap_or_default();
        let retry_in_secs = wait.as_secs();
        let waited_secs = waited.as_secs();
        if refused || waited >= ALARM_AFTER {
            tracing::error!(
                sub = %entry.sub,
                revocation = %entry.id,
                attempts,
                waited_secs,
                retry_in_secs,
                error,
                "a queued token still could not be revoked at the provider; it stays live there until a retry gets through"
            );
        } else {
            tracing::warn!(
                sub = %entry.sub,
                revocation = %entry.id,
                attempts,
                waited_secs,
                retry_in_secs,
                error,
                "a queued token could not be revoked at the provider yet; retrying later"
            );
        }
        match self
            .store
            .mark_revocation_failed(&entry.id, now + wait, error)
            .await
        {
            Ok(()) => {}
            // Another instance revoked it meanwhile.
            Err(StoreError::NotFound) => {}
            Err(e) => tracing::warn!(
                revocation = %entry.id,
                error = %e,
                "could not record a failed revocation; it is retried on the next pass"
            ),
        }
    }
}

/// Retries the due entries every [`POLL_EVERY`] until `stop` says stop, or its sender is gone
/// (then makes a last pass), or until the retrier is gone. Holds the retrier weakly.
pub async fn run(retrier: Weak<RevocationRetrier>, mut stop: watch::Receiver<bool>) {
    let mut ticks = interval(POLL_EVERY);
    ticks.reset();
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = ticks.tick() => false,
            _ = stop.wait_for(|stop| *stop) => true,
        };
        let Some(retrier) = retrier.upgrade() else {
            return;
        };
        if let Err(e) = retrier.retry(Which::Due).await {
            tracing::warn!(error = %e, "could not read the revocation queue; trying again later");
        }
        if last {
            return;
        }
    }
}
