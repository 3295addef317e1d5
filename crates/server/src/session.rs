//! The purge of expired sessions: [`purge_every`] deletes them, of users and of operators, every
//! `server.session_purge_interval`. Opening, reading and ending sessions are operations
//! ([`crate::ops::sessions`]).

use crate::workers::{StopSignal, stopped};
use grantkeeper_core::SharedClock;
use grantkeeper_store::{SharedStore, Store};
use std::time::Duration;
use tokio::time::{MissedTickBehavior, interval};

/// The first purge comes this soon after start at the latest, so that a server restarted more
/// often than its interval still purges.
const FIRST_PURGE_WITHIN: Duration = Duration::from_secs(60);

/// Deletes expired sessions every `every` (times read from the injected clock), in the
/// background ([`crate::workers`]), until told to stop.
pub(crate) async fn purge_every(
    store: SharedStore,
    clock: SharedClock,
    every: Duration,
    mut stop: StopSignal,
) {
    let mut ticks = interval(every);
    ticks.reset_after(every.min(FIRST_PURGE_WITHIN));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stopped(&mut stop) => return,
        }
        purge_expired(store.as_ref(), clock.now()).await;
    }
}

/// One pass: sessions of users and of operators expired at `now`. A failure is logged and the
/// next pass tries again.
async fn purge_expired(store: &dyn Store, now: time::OffsetDateTime) {
    match store.purge_expired_sessions(now).await {
        Ok(0) => {}
        Ok(purged) => tracing::debug!(purged, "deleted expired sessions"),
        Err(e) => {
            tracing::warn!(error = %e, "deleting expired sessions failed; trying again later")
        }
    }
    match store.purge_expired_admin_sessions(now).await {
        Ok(0) => {}
        Ok(purged) => tracing::debug!(purged, "deleted expired console sessions"),
        Err(e) => {
            tracing::warn!(error = %e, "deleting expired console sessions failed; trying again later")
        }
    }
}
