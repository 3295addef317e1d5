//! The background work of a running server, started in one place and stopped in one place.
//!
//! [`App::new`](crate::App::new) starts, through [`Workers::start`]:
//! - `audit`: the audit writer ([`crate::audit`]);
//! - `activity`: the writing of counted activity to the store ([`crate::metrics`]);
//! - `revocations`: the retrier of queued revocations at the provider
//!   ([`grantkeeper_broker::revocation::retry`]);
//! - `webhook`: the delivery of grant state changes, when `[events] webhook_url` is set
//!   ([`crate::webhook`]);
//! - `keyring`: the reading of the store's data keys every `vault.reload_interval`
//!   ([`crate::vault::keyring`]);
//! - `sessions`: the purge of expired sessions ([`crate::session`]);
//! - `drops`: the listener for what other instances drop, on PostgreSQL ([`crate::drops`]);
//!
//! and [`App::start_keepalive`](crate::App::start_keepalive) adds `keep-alive`
//! ([`crate::keepalive`]).
//!
//! [`Workers::stop`] (through [`App::shutdown`](crate::App::shutdown)) tells every task to
//! stop: the audit writer writes its pending rows, the webhook delivers the events due, the
//! retrier makes a last pass over the due revocations, the activity is written, keep-alive
//! finishes the refreshes under way; the others just end. It waits at most [`STOP_WAIT`] for
//! all of them together, then logs each task that did not finish by name and aborts it.
//! Dropping the workers (with the last clone of the app) tells the tasks the same, without
//! waiting for them.

use grantkeeper_core::Stopwatch;
use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The longest [`Workers::stop`] waits for the tasks, all together.
pub const STOP_WAIT: Duration = Duration::from_secs(5);

/// The signal a task stops on: true once [`Workers::stop`] was called; its sender gone once the
/// workers are dropped.
pub type StopSignal = watch::Receiver<bool>;

/// Returns once `stop` says stop (or its sender is gone).
pub async fn stopped(stop: &mut StopSignal) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Whether `stop` says stop (or its sender is gone), without waiting.
pub fn stopping(stop: &StopSignal) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// The background tasks of one [`App`](crate::App), with their handles.
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<(&'static str, JoinHandle<()>)>>,
}

/// What [`Workers::stop`] saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stopped {
    /// The tasks that ended within [`STOP_WAIT`].
    pub finished: Vec<&'static str>,
    /// The tasks still running after [`STOP_WAIT`] (aborted).
    pub unfinished: Vec<&'static str>,
    /// How long the wait took.
    pub took: Duration,
}

/// What the tasks of [`Workers::start`] work with.
pub(crate) struct Work {
    pub audit: crate::audit::AuditWriter,
    pub activity: std::sync::Weak<crate::metrics::ActivityFlusher>,
    pub revocations: std::sync::Weak<grantkeeper_broker::revocation::retry::RevocationRetrier>,
    pub webhook: Option<crate::webhook::Deliverer>,
    pub vault: grantkeeper_core::VaultHandle,
    pub keyring_reload: Duration,
    pub store: grantkeeper_store::SharedStore,
    pub clock: grantkeeper_core::SharedClock,
    pub session_purge: Duration,
    pub drops: Option<crate::drops::DropWatcher>,
}

impl Workers {
    /// Starts every background task of an app.
    pub(crate) fn start(work: Work) -> Workers {
        let (stop, _) = watch::channel(false);
        let workers = Workers {
            stop,
            tasks: Mutex::default(),
        };
        workers.spawn("audit", work.audit.run(workers.signal()));
        workers.spawn(
            "activity",
            crate::metrics::run(work.activity, workers.signal()),
        );
        workers.spawn(
            "revocations",
            grantkeeper_broker::revocation::retry::run(work.revocations, workers.signal()),
        );
        if let Some(webhook) = work.webhook {
            workers.spawn("webhook", webhook.run(workers.signal()));
        }
        workers.spawn(
            "keyring",
            crate::vault::keyring::keep_reloading(
                &work.vault,
                work.keyring_reload,
                workers.signal(),
            ),
        );
        workers.spawn(
            "sessions",
            crate::session::purge_every(
                work.store,
                work.clock,
                work.session_purge,
                workers.signal(),
            ),
        );
        if let Some(drops) = work.drops {
            workers.spawn("drops", drops.run(workers.signal()));
        }
        workers
    }

    /// A new receiver of the stop signal.
    pub(crate) fn signal(&self) -> StopSignal {
        self.stop.subscribe()
    }

    /// Runs `task` in the background under `name`, to be waited for by [`Workers::stop`].
    pub(crate) fn spawn(
        &self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let handle = tokio::spawn(task);
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((name, handle));
    }

    /// Whether a task of this name was started and not stopped yet.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|(n, _)| *n == name)
    }

    /// Tells every task to stop, and waits at most [`STOP_WAIT`] for them all; those still
    /// running then are logged and aborted.
    pub async fn stop(&self) -> Stopped {
        self.stop.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        let started = Stopwatch::start();
        // Every wait starts at once (join_all polls them together): one bound for all.
        let waits = tasks.into_iter().map(|(name, mut task)| async move {
            let ended = tokio::time::timeout(STOP_WAIT, &mut task).await.is_ok();
            if !ended {
                task.abort();
            }
            (name, ended)
        });
        let mut stopped = Stopped::default();
        for (name, ended) in futures_util::future::join_all(waits).await {
            if ended {
                stopped.finished.push(name);
            } else {
                tracing::warn!(
                    worker = name,
                    wait_secs = STOP_WAIT.as_secs(),
                    "a background task did not finish in time at shutdown; aborted"
                );
                stopped.unfinished.push(name);
            }
        }
        stopped.took = started.elapsed();
        stopped
    }
}
