//! Single flight per grant: callers that need a refresh of the same grant queue on one async
//! lock; the first refreshes, the others find its result when their turn comes and share it.
//!
//! The map holds an entry only while somebody holds a ticket for it, so it stays as small as
//! the number of grants being refreshed at this moment.

use crate::AccessToken;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

#[cfg(test)]
mod tests {
    use super::*;
    use grantkeeper_core::{Scopes, SecretString};
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
                scopes: Scopes::default(),
            }));
        }
        drop(first);
        drop(second);
        assert_eq!(flights.len(), 1);
        drop(late);
        assert_eq!(flights.len(), 0);
    }
}

/// The cross-instance half of the single flight (invariant 4): held, after the in-process
/// lock, for the whole refresh. With SQLite there is one process per database, so the
/// in-process lock is the whole story and this holds nothing. The PostgreSQL store will offer
/// a session-level advisory lock keyed by the grant (`pg_advisory_lock(hashtextextended(sub,
/// 0))`); acquiring it here, and releasing it when the guard drops, is all the broker will
/// need. Writes stay fenced by the grant's version either way, so the lock saves upstream
/// calls, not correctness.
#[derive(Default)]
pub(crate) struct InstanceLock;

/// Held while refreshing; releases the cross-instance lock when dropped.
pub(crate) struct InstanceGuard;

impl InstanceLock {
    pub(crate) async fn acquire(&self, _sub: &str) -> Result<InstanceGuard, crate::BrokerError> {
        Ok(InstanceGuard)
    }
}
