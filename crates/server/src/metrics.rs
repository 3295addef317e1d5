//! Moves the activity that [`Metrics`] counts in memory into the store, where every
//! instance's counts add up for the admin console's charts, and prunes what is too old.
//!
//! A background task ([`crate::workers`]) flushes every [`FLUSH_EVERY`] and prunes every
//! [`PRUNE_EVERY`]; told to stop, it flushes a last time and ends. It ends too once the
//! [`App`](crate::App) that holds the flusher is gone, and a last flush is attempted then.
//! A write the store refuses gives the points back to the metrics for the next round (memory
//! stays bounded by [`grantkeeper_core::metrics::MAX_ACTIVITY_ENTRIES`]). Flushes run one at
//! a time, so that a caller of [`ActivityFlusher::flush`] finds everything counted before its
//! call in the store once it returns.

use crate::workers::{StopSignal, stopped};
use grantkeeper_core::{Metrics, SharedClock};
use grantkeeper_store::{ActivityPoint, ActivityStore, StoreError};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::{MissedTickBehavior, interval};

/// How often the counted activity is written to the store.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);
/// How often activity older than [`KEEP_ACTIVITY`] is deleted.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long activity is kept in the store.
pub const KEEP_ACTIVITY: Duration = Duration::from_secs(30 * 86_400);

/// Writes one process's activity to the store.
pub struct ActivityFlusher {
    store: Arc<dyn ActivityStore>,
    metrics: Metrics,
    clock: SharedClock,
    /// One flush at a time (the task's and explicit ones).
    flushing: tokio::sync::Mutex<()>,
}

impl ActivityFlusher {
    /// A flusher; [`run`] writes through it in the background.
    pub fn new(
        store: Arc<dyn ActivityStore>,
        metrics: Metrics,
        clock: SharedClock,
    ) -> Arc<ActivityFlusher> {
        Arc::new(ActivityFlusher {
            store,
            metrics,
            clock,
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    /// Writes the activity counted so far; returns how many points were written. On failure
    /// the points are kept for the next flush.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let _one_at_a_time = self.flushing.lock().await;
        let deltas = self.metrics.take_activity();
        if deltas.is_empty() {
            return Ok(0);
        }
        let points: Vec<ActivityPoint> = deltas.iter().cloned().map(ActivityPoint::from).collect();
        let written = points.len();
        match self.store.add_activity(points).await {
            Ok(()) => Ok(written),
            Err(e) => {
                self.metrics.restore_activity(deltas);
                Err(e)
            }
        }
    }

    /// Deletes activity older than [`KEEP_ACTIVITY`]; returns how many points.
    pub async fn prune(&self) -> Result<u64, StoreError> {
        let before = self.clock.now() - KEEP_ACTIVITY;
        self.store.prune_activity(before).await
    }
}

impl Drop for ActivityFlusher {
    /// The app is going away: what was counted since the last flush is written by a task of
    /// its own, when a runtime is still there to run it.
    fn drop(&mut self) {
        let deltas = self.metrics.take_activity();
        if deltas.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                points = deltas.len(),
                "activity counted since the last flush was not written"
            );
            return;
        };
        let store = self.store.clone();
        runtime.spawn(async move {
            let points = deltas.into_iter().map(ActivityPoint::from).collect();
            if let Err(e) = store.add_activity(points).await {
                tracing::warn!(error = %e, "the last activity could not be written");
            }
        });
    }
}

/// Flushes and prunes on time until told to stop (then flushes a last time) or until the
/// flusher is gone. Holds the flusher weakly.
pub async fn run(flusher: Weak<ActivityFlusher>, mut stop: StopSignal) {
    let mut flushes = interval(FLUSH_EVERY);
    flushes.reset();
    flushes.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first prune comes soon after start, then hourly.
    let mut prunes = interval(PRUNE_EVERY);
    prunes.reset_after(FLUSH_EVERY);
    prunes.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let (prune, last) = tokio::select! {
            _ = flushes.tick() => (false, false),
            _ = prunes.tick() => (true, false),
            () = stopped(&mut stop) => (false, true),
        };
        let Some(flusher) = flusher.upgrade() else {
            return;
        };
        if last {
            if let Err(e) = flusher.flush().await {
                tracing::warn!(error = %e, "could not write the last activity counts");
            }
            return;
        }
        if prune {
            match flusher.prune().await {
                Ok(0) => {}
                Ok(pruned) => tracing::debug!(pruned, "pruned old activity"),
                Err(e) => {
                    tracing::warn!(error = %e, "pruning old activity failed; trying again later")
                }
            }
        } else if let Err(e) = flusher.flush().await {
            tracing::warn!(
                error = %e,
                pending = flusher.metrics.pending_activity(),
                "writing activity failed; keeping it for the next flush"
            );
        }
    }
}
