//! Single flight per grant: callers that need a refresh of the same grant queue on one async
//! lock; the first refreshes, the others find its result when their turn comes and share it.
//!
//! The map holds an entry only while somebody holds a ticket for it, so it stays as small as
//! the number of grants being refreshed at this moment.
//!
//! Across instances sharing a store, [`InstanceLock`] adds the grant's refresh lease.

use crate::{AccessToken, BrokerError};
use grantkeeper_core::SharedClock;
use grantkeeper_store::{BrokerStore, GrantRecord, RefreshSuccess, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

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

struct Flight {
    /// Flights landed since the entry was made; read without the lock, so that a caller can
    /// tell whether one landed while it queued.
    landed: AtomicU64,
    slot: tokio::sync::Mutex<Option<Landed>>,
}

type Map = Arc<Mutex<HashMap<String, Arc<Flight>>>>;

#[derive(Clone, Default)]
pub(crate) struct Flights {
    map: Map,
}

impl Flights {
    /// A place in the queue of `sub`'s flight.
    pub(crate) fn ticket(&self, sub: &str) -> Ticket {
        let mut map = lock(&self.map);
        let flight = map
            .entry(sub.to_owned())
            .or_insert_with(|| {
                Arc::new(Flight {
                    landed: AtomicU64::new(0),
                    slot: tokio::sync::Mutex::new(None),
                })
            })
            .clone();
        let seen = flight.landed.load(Ordering::SeqCst);
        Ticket {
            map: self.map.clone(),
            sub: sub.to_owned(),
            flight,
            seen,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

fn lock(map: &Map) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Flight>>> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct Ticket {
    map: Map,
    sub: String,
    flight: Arc<Flight>,
    seen: u64,
}

impl Ticket {
    /// Waits for the grant's lock.
    pub(crate) async fn board(&self) -> Boarded<'_> {
        let slot = self.flight.slot.lock().await;
        let shared = if self.flight.landed.load(Ordering::SeqCst) == self.seen {
            None
        } else {
            slot.clone()
        };
        Boarded {
            slot,
            landed: &self.flight.landed,
            shared,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut map = lock(&self.map);
        // Tickets are only made under the map's lock, so nobody can be taking one now: if the
        // map's Arc and ours are the last, the entry is unused.
        if Arc::strong_count(&self.flight) == 2
            && map
                .get(&self.sub)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            map.remove(&self.sub);
        }
    }
}

/// Holding the grant's lock.
pub(crate) struct Boarded<'a> {
    slot: tokio::sync::MutexGuard<'a, Option<Landed>>,
    landed: &'a AtomicU64,
    shared: Option<Landed>,
}

impl Boarded<'_> {
    /// The result of a flight that landed while this caller queued.
    pub(crate) fn shared(&self) -> Option<&Landed> {
        self.shared.as_ref()
    }

    /// Leaves the result of this caller's flight for the ones queued behind it.
    pub(crate) fn land(&mut self, landed: Landed) {
        *self.slot = Some(landed);
        self.landed.fetch_add(1, Ordering::SeqCst);
    }
}

/// The cross-instance half of the single flight (invariant 4): a lease on the grant's refresh,
/// kept by the store and shared by every instance on it. Taken after the in-process lock and
/// only before an upstream call, so callers in one process share one lease (and one wait for
/// it), and hand-outs of held tokens never write to the store. It expires by itself, a little
/// after the longest a refresh may take, so a holder that dies blocks the others no longer
/// than that. Writes stay fenced by the grant's version either way: the lease saves upstream
/// calls, not correctness.
pub(crate) struct InstanceLock {
    store: Arc<dyn BrokerStore>,
    clock: SharedClock,
    /// This broker's name as a lease holder; random, so that instances never share one.
    owner: Arc<str>,
}

/// How long a lease lasts: the longest refresh, plus a margin for the store writes around it,
/// the wait for the upstream budget and clocks of instances that disagree a little.
pub(crate) const LEASE: Duration = Duration::from_secs(crate::REFRESH_TIMEOUT.as_secs() + 10);
/// A holder that has had its lease this long extends it before calling upstream, so that the
/// call never outlives it.
const RENEW_AFTER: Duration = Duration::from_secs(5);
/// How long a caller waits for another instance's lease before giving up: the longest it can
/// legitimately be held, plus a second (the store keeps whole seconds).
pub(crate) const LEASE_WAIT: Duration = Duration::from_secs(LEASE.as_secs() + 1);

/// Time between two looks at a lease held elsewhere: 25 to 50 ms, jittered so that waiting
/// instances do not poll in step.
pub(crate) fn poll_interval() -> Duration {
    Duration::from_millis(25 + grantkeeper_core::random::u64() % 26)
}

impl InstanceLock {
    pub(crate) fn new(store: Arc<dyn BrokerStore>, clock: SharedClock) -> InstanceLock {
        InstanceLock {
            store,
            clock,
            owner: Arc::from(format!(
                "broker-{}",
                grantkeeper_core::random::token::<12>()
            )),
        }
    }

    /// Takes the grant's lease when nobody else holds it; None when another instance does.
    pub(crate) async fn try_acquire(
        &self,
        sub: &str,
    ) -> Result<Option<InstanceGuard>, BrokerError> {
        let now = self.clock.now();
        match self
            .store
            .try_lease_refresh(sub, &self.owner, until(now, LEASE), now)
            .await
        {
            Ok(true) => Ok(Some(self.guard(sub, now))),
            Ok(false) => Ok(None),
            Err(e) => Err(lease_error(e)),
        }
    }

    /// [`InstanceLock::try_acquire`], with the grant as it is under the lease.
    pub(crate) async fn try_acquire_reading(
        &self,
        sub: &str,
    ) -> Result<Option<(InstanceGuard, GrantRecord)>, BrokerError> {
        let now = self.clock.now();
        match self
            .store
            .try_lease_refresh_reading(sub, &self.owner, until(now, LEASE), now)
            .await
        {
            Ok(Some(grant)) => Ok(Some((self.guard(sub, now), grant))),
            Ok(None) => Ok(None),
            Err(e) => Err(lease_error(e)),
        }
    }

    /// The guard of a lease on `sub` taken at `now`.
    fn guard(&self, sub: &str, now: OffsetDateTime) -> InstanceGuard {
        InstanceGuard {
            store: self.store.clone(),
            clock: self.clock.clone(),
            owner: self.owner.clone(),
            sub: sub.to_owned(),
            taken_at: now,
            released: false,
        }
    }

    /// Takes the grant's lease, waiting while another instance holds it; `Unavailable` when
    /// it stays held for longer than any refresh may take.
    pub(crate) async fn acquire(&self, sub: &str) -> Result<InstanceGuard, BrokerError> {
        let give_up = tokio::time::Instant::now() + LEASE_WAIT;
        loop {
            if let Some(guard) = self.try_acquire(sub).await? {
                return Ok(guard);
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(still_held());
            }
            tokio::time::sleep(poll_interval()).await;
        }
    }
}

/// A failed attempt at a lease: an unknown user, or the store's error.
fn lease_error(e: StoreError) -> BrokerError {
    match e {
        StoreError::NotFound => BrokerError::UnknownUser,
        e => e.into(),
    }
}

/// The answer when another instance keeps a grant's lease for longer than a refresh may take.
pub(crate) fn still_held() -> BrokerError {
    BrokerError::Unavailable {
        retry_after: Duration::from_secs(1),
        detail: "another instance keeps refreshing this grant".to_owned(),
    }
}

fn until(now: OffsetDateTime, lease: Duration) -> OffsetDateTime {
    now.checked_add(time::Duration::try_from(lease).unwrap_or(time::Duration::MINUTE))
        .unwrap_or(now)
}

/// Holding a grant's lease. [`InstanceGuard::release`] gives it back; a guard dropped without
/// that (an error on the way) gives it back from a task of its own.
pub(crate) struct InstanceGuard {
    store: Arc<dyn BrokerStore>,
    clock: SharedClock,
    owner: Arc<str>,
    sub: String,
    taken_at: OffsetDateTime,
    released: bool,
}

impl InstanceGuard {
    /// Just before an upstream call: extends the lease when local waits (the upstream budget)
    /// have eaten into its margin. False when it was lost meanwhile (it ran out and another
    /// instance took it): the caller must not call upstream.
    pub(crate) async fn keep(&mut self) -> Result<bool, BrokerError> {
        let now = self.clock.now();
        if now - self.taken_at < RENEW_AFTER {
            return Ok(true);
        }
        let kept = self
            .store
            .try_lease_refresh(&self.sub, &self.owner, until(now, LEASE), now)
            .await?;
        if kept {
            self.taken_at = now;
        }
        Ok(kept)
    }

    /// Records a refresh of the grant and gives the lease back in the same transaction (one
    /// commit). When the fenced write fails, nothing is written and the lease is still held.
    pub(crate) async fn record_refresh(
        &mut self,
        expected_version: i64,
        refresh: RefreshSuccess,
    ) -> Result<GrantRecord, StoreError> {
        let written = self
            .store
            .record_refresh_releasing(&self.sub, expected_version, refresh, &self.owner)
            .await;
        if written.is_ok() {
            self.released = true;
        }
        written
    }

    pub(crate) async fn release(mut self) {
        if self.released {
            return;
        }
        self.released = true;
        release(&self.store, &self.sub, &self.owner).await;
    }
}

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        // Without a runtime (shutting down) the lease simply runs out.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, sub, owner) = (self.store.clone(), self.sub.clone(), self.owner.clone());
            runtime.spawn(async move { release(&store, &sub, &owner).await });
        }
    }
}

async fn release(store: &Arc<dyn BrokerStore>, sub: &str, owner: &str) {
    if let Err(e) = store.release_refresh_lease(sub, owner).await {
        // It runs out by itself; until then the others wait for it.
        tracing::warn!(sub, error = %e, "could not give back a grant's refresh lease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantkeeper_core::SecretString;
    use time::OffsetDateTime;

    #[tokio::test]
    async fn queued_callers_see_what_landed_and_the_map_empties() {
        let flights = Flights::default();
        let first = flights.ticket("a");
        let second = flights.ticket("a");
        assert_eq!(flights.len(), 1);
        {
            let mut boarded = first.board().await;
            assert!(boarded.shared().is_none());
            boarded.land(Landed::Misconfigured("x".into()));
        }
        let late = flights.ticket("a");
        {
            let boarded = second.board().await;
            assert!(matches!(boarded.shared(), Some(Landed::Misconfigured(_))));
        }
        {
            // Came after the landing: it must check for itself.
            let mut boarded = late.board().await;
            assert!(boarded.shared().is_none());
            boarded.land(Landed::Token(crate::AccessToken {
                token: SecretString::from("t"),
                expires_at: OffsetDateTime::UNIX_EPOCH,
                scopes: Arc::default(),
            }));
        }
        drop(first);
        drop(second);
        assert_eq!(flights.len(), 1);
        drop(late);
        assert_eq!(flights.len(), 0);
    }
}
