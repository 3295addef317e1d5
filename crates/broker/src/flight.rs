//! Single flight per grant, in this process and across every instance sharing the store, behind
//! one interface ([`SingleFlight`]): the refresh engine and the revocation call it; it calls
//! nothing of theirs and knows nothing of tokens (what a flight leaves for the callers queued
//! behind it is the caller's type, `L`).
//!
//! In process: callers that need a refresh of the same grant queue on one async lock
//! ([`SingleFlight::ticket`]); the first refreshes, the others find what it left when their turn
//! comes and share it. The map holds an entry only while somebody holds a ticket for it, so it
//! stays as small as the number of grants being refreshed at this moment.
//!
//! Across instances: the grant's refresh lease in the store ([`SingleFlight::wait_for_lease`],
//! [`SingleFlight::acquire`]), taken after the in-process lock and only before an upstream call.

use crate::BrokerError;
use grantkeeper_core::{SharedClock, Stopwatch};
use grantkeeper_store::{BrokerStore, GrantRecord, RefreshSuccess, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;

/// Longest an upstream call under a grant's lock may take (a refresh, a revocation), whatever
/// the HTTP client's own timeouts: a hung provider must not hold a grant's lock (and every
/// caller queued on it) for ever. The lease is sized from it.
pub(crate) const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);

/// The single flight of every grant: the in-process queue and the cross-instance lease.
pub(crate) struct SingleFlight<L> {
    flights: Flights<L>,
    instances: InstanceLock,
}

impl<L: Clone> SingleFlight<L> {
    pub(crate) fn new(store: Arc<dyn BrokerStore>, clock: SharedClock) -> Self {
        SingleFlight {
            flights: Flights::default(),
            instances: InstanceLock::new(store, clock),
        }
    }

    /// A place in the queue of `sub`'s flight in this process.
    pub(crate) fn ticket(&self, sub: &str) -> Ticket<L> {
        self.flights.ticket(sub)
    }

    /// Starts waiting for the grant's lease across instances (see [`LeaseWait::next`]).
    pub(crate) fn wait_for_lease(&self, sub: &str) -> LeaseWait<'_> {
        LeaseWait {
            instances: &self.instances,
            sub: sub.to_owned(),
            give_up: self.instances.clock.monotonic() + LEASE_WAIT,
            started: Stopwatch::start(),
            waited: false,
        }
    }

    /// Takes the grant's lease, waiting while another instance holds it; `Unavailable` when
    /// it stays held for longer than any refresh may take.
    pub(crate) async fn acquire(&self, sub: &str) -> Result<InstanceGuard, BrokerError> {
        self.instances.acquire(sub).await
    }
}

/// A turn of [`LeaseWait::next`].
pub(crate) enum Turn {
    /// This instance holds the lease; the grant as read under it.
    Mine(InstanceGuard, Box<GrantRecord>),
    /// Another instance holds it; the grant as read again after a short wait, in which the
    /// holder may have written what the caller wants.
    Elsewhere(Box<GrantRecord>),
}

/// Waiting for a grant's lease held by another instance. Nothing is asked upstream meanwhile:
/// the caller looks at each grant read again for what it wants, and stops when it finds it.
pub(crate) struct LeaseWait<'a> {
    instances: &'a InstanceLock,
    sub: String,
    /// When to give up: the clock's monotonic reading.
    give_up: Duration,
    started: Stopwatch,
    waited: bool,
}

impl LeaseWait<'_> {
    /// The lease when it is free; else, after a poll interval, the grant as it is now; else,
    /// once the lease has been held elsewhere for longer than a refresh may take,
    /// `Unavailable`.
    pub(crate) async fn next(&mut self) -> Result<Turn, BrokerError> {
        let sub = self.sub.as_str();
        if let Some((lease, current)) = self.instances.try_acquire_reading(sub).await? {
            return Ok(Turn::Mine(lease, Box::new(current)));
        }
        if !self.waited {
            tracing::debug!(
                sub,
                "another instance is refreshing this grant; waiting for its token"
            );
            self.waited = true;
        }
        if self.instances.clock.monotonic() >= self.give_up {
            tracing::warn!(
                sub,
                outcome = "lease_held",
                waited_ms = self.waited_ms(),
                "another instance held this grant's refresh lease for longer than a refresh may take"
            );
            return Err(still_held());
        }
        tokio::time::sleep(poll_interval()).await;
        let current = self
            .instances
            .store
            .grant(sub)
            .await?
            .ok_or(BrokerError::UnknownUser)?;
        Ok(Turn::Elsewhere(Box::new(current)))
    }

    /// Whether the lease was found held elsewhere at least once.
    pub(crate) fn waited(&self) -> bool {
        self.waited
    }

    /// How long this wait has lasted, in milliseconds.
    pub(crate) fn waited_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// One grant's flight: what its last caller left (`L`) for the ones queued behind it.
struct Flight<L> {
    /// Flights landed since the entry was made; read without the lock, so that a caller can
    /// tell whether one landed while it queued.
    landed: AtomicU64,
    slot: tokio::sync::Mutex<Option<L>>,
}

type Map<L> = Arc<Mutex<HashMap<String, Arc<Flight<L>>>>>;

struct Flights<L> {
    map: Map<L>,
}

impl<L> Default for Flights<L> {
    fn default() -> Self {
        Flights {
            map: Arc::default(),
        }
    }
}

impl<L: Clone> Flights<L> {
    /// A place in the queue of `sub`'s flight.
    fn ticket(&self, sub: &str) -> Ticket<L> {
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

fn lock<L>(map: &Map<L>) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Flight<L>>>> {
    map.lock().unwrap_or_else(|e| e.into_inner())
}

/// A place in the queue of a grant's flight in this process.
pub(crate) struct Ticket<L> {
    map: Map<L>,
    sub: String,
    flight: Arc<Flight<L>>,
    seen: u64,
}

impl<L: Clone> Ticket<L> {
    /// Waits for the grant's lock.
    pub(crate) async fn board(&self) -> Boarded<'_, L> {
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

impl<L> Drop for Ticket<L> {
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
pub(crate) struct Boarded<'a, L> {
    slot: tokio::sync::MutexGuard<'a, Option<L>>,
    landed: &'a AtomicU64,
    shared: Option<L>,
}

impl<L> Boarded<'_, L> {
    /// The result of a flight that landed while this caller queued.
    pub(crate) fn shared(&self) -> Option<&L> {
        self.shared.as_ref()
    }

    /// Leaves the result of this caller's flight for the ones queued behind it.
    pub(crate) fn land(&mut self, landed: L) {
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
struct InstanceLock {
    store: Arc<dyn BrokerStore>,
    clock: SharedClock,
    /// This broker's name as a lease holder; random, so that instances never share one.
    owner: Arc<str>,
}

/// How long a lease lasts: the longest refresh, plus a margin for the store writes around it,
/// the wait for the upstream budget and clocks of instances that disagree a little.
const LEASE: Duration = Duration::from_secs(REFRESH_TIMEOUT.as_secs() + 10);
/// A holder that has had its lease this long extends it before calling upstream, so that the
/// call never outlives it.
const RENEW_AFTER: Duration = Duration::from_secs(5);
/// How long a caller waits for another instance's lease before giving up: the longest it can
/// legitimately be held, plus a second (the store keeps whole seconds).
const LEASE_WAIT: Duration = Duration::from_secs(LEASE.as_secs() + 1);

/// Time between two looks at a lease held elsewhere: 25 to 50 ms, jittered so that waiting
/// instances do not poll in step.
fn poll_interval() -> Duration {
    Duration::from_millis(25 + grantkeeper_core::random::u64() % 26)
}

impl InstanceLock {
    fn new(store: Arc<dyn BrokerStore>, clock: SharedClock) -> InstanceLock {
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
    async fn try_acquire(&self, sub: &str) -> Result<Option<InstanceGuard>, BrokerError> {
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
    async fn try_acquire_reading(
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
    async fn acquire(&self, sub: &str) -> Result<InstanceGuard, BrokerError> {
        let give_up = self.clock.monotonic() + LEASE_WAIT;
        loop {
            if let Some(guard) = self.try_acquire(sub).await? {
                return Ok(guard);
            }
            if self.clock.monotonic() >= give_up {
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

    #[tokio::test]
    async fn queued_callers_see_what_landed_and_the_map_empties() {
        let flights = Flights::<&'static str>::default();
        let first = flights.ticket("a");
        let second = flights.ticket("a");
        assert_eq!(flights.len(), 1);
        {
            let mut boarded = first.board().await;
            assert!(boarded.shared().is_none());
            boarded.land("misconfigured");
        }
        let late = flights.ticket("a");
        {
            let boarded = second.board().await;
            assert_eq!(boarded.shared(), Some(&"misconfigured"));
        }
        {
            // Came after the landing: it must check for itself.
            let mut boarded = late.board().await;
            assert!(boarded.shared().is_none());
            boarded.land("token");
        }
        drop(first);
        drop(second);
        assert_eq!(flights.len(), 1);
        drop(late);
        assert_eq!(flights.len(), 0);
    }
}
