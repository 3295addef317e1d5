//! The audit log: who did what for which user, written off the request path.
//!
//! Handlers add rows to a pending set in memory; one task writes the set every [`WINDOW`] (or
//! as soon as it holds [`BATCH`] rows), in one transaction. Within a window, identical acts
//! (same actor, user, action, detail and outcome: an app service handed the same user's token
//! again and again) are kept as one row that counts them (`times`) and says when the last one
//! happened, so that a hot hand-out path costs a counter increment rather than a database row
//! per call. Nothing is dropped: when the pending set is full, handlers wait for the writer.

use crate::workers::{StopSignal, stopped};
use foldhash::fast::RandomState;
use grantkeeper_core::SharedClock;
use grantkeeper_store::{AuditRecord, AuditStore};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot};

/// How long a row may wait before it is written, and the span within which identical acts are
/// counted in one row.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Rows that make the writer write at once, without waiting for the window's end.
const BATCH: usize = 512;
/// Rows pending at most; handlers that would add another wait until the writer takes them.
const MAX_PENDING: usize = 16_384;

/// A handle for appending audit rows.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
    flush: mpsc::UnboundedSender<oneshot::Sender<()>>,
    clock: SharedClock,
}

struct Shared {
    pending: Mutex<Pending>,
    limits: Limits,
    /// Wakes the writer before the window's end (a full batch).
    full: Notify,
    /// Wakes handlers waiting for room, once the writer has taken the pending rows.
    taken: Notify,
}

/// When the writer writes, and how much may wait.
#[derive(Clone, Copy, Debug)]
struct Limits {
    window: Duration,
    batch: usize,
    max_pending: usize,
}

const LIMITS: Limits = Limits {
    window: WINDOW,
    batch: BATCH,
    max_pending: MAX_PENDING,
};

/// The rows of the current window, in order of their first act, with an index from a hash of
/// what makes two acts identical to the rows of that hash.
#[derive(Default)]
struct Pending {
    rows: Vec<AuditRecord>,
    index: HashMap<u64, Vec<usize>, RandomState>,
    hasher: RandomState,
}

impl Pending {
    /// Counts the act in its row if the window holds an identical one; else returns false.
    fn count(&mut self, hash: u64, act: &Act<'_>, at: time::OffsetDateTime) -> bool {
        let rows = &self.rows;
        let Some(&i) = self.index.get(&hash).and_then(|slots| {
            slots
                .iter()
                .find(|&&i| rows.get(i).is_some_and(|row| act.is(row)))
        }) else {
            return false;
        };
        let Some(row) = self.rows.get_mut(i) else {
            return false;
        };
        row.times = row.times.saturating_add(1);
        row.last_at = row.last_at.max(at);
        true
    }

    fn push(&mut self, hash: u64, row: AuditRecord) {
        self.index.entry(hash).or_default().push(self.rows.len());
        self.rows.push(row);
    }

    fn take(&mut self) -> Vec<AuditRecord> {
        self.index.clear();
        std::mem::take(&mut self.rows)
    }
}

/// One act, borrowed from the caller until it needs a row of its own.
struct Act<'a> {
    actor: &'a str,
    sub: Option<&'a str>,
    action: &'a str,
    detail: &'a str,
    outcome: &'a str,
}

impl Act<'_> {
    fn hash(&self, hasher: &RandomState) -> u64 {
        hasher.hash_one((self.actor, self.sub, self.action, self.detail, self.outcome))
    }

    fn is(&self, row: &AuditRecord) -> bool {
        row.actor == self.actor
            && row.sub.as_deref() == self.sub
            && row.action == self.action
            && row.detail == self.detail
            && row.outcome == self.outcome
    }
}

/// The writer of an [`AuditLog`]'s rows, to be run in the background ([`crate::workers`]).
pub struct AuditWriter {
    store: Arc<dyn AuditStore>,
    shared: Arc<Shared>,
    flushes: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
}

impl AuditLog {
    /// The log and its writer, which writes nothing until it runs.
    pub fn new(store: Arc<dyn AuditStore>, clock: SharedClock) -> (AuditLog, AuditWriter) {
        AuditLog::with_limits(store, clock, LIMITS)
    }

    fn with_limits(
        store: Arc<dyn AuditStore>,
        clock: SharedClock,
        limits: Limits,
    ) -> (AuditLog, AuditWriter) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            limits,
            full: Notify::new(),
            taken: Notify::new(),
        });
        let (flush, flushes) = mpsc::unbounded_channel();
        let writer = AuditWriter {
            store,
            shared: shared.clone(),
            flushes,
        };
        let log = AuditLog {
            shared,
            flush,
            clock,
        };
        (log, writer)
    }

    /// Appends an act (`id` is assigned by the store, `at` is now): counted in the window's
    /// identical row if there is one, else a row of its own.
    pub async fn record(
        &self,
        actor: &str,
        sub: Option<&str>,
        action: &str,
        detail: String,
        outcome: &str,
    ) {
        let act = Act {
            actor,
            sub,
            action,
            detail: &detail,
            outcome,
        };
        let at = self.clock.now();
        loop {
            let taken = {
                let mut pending = self
                    .shared
                    .pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let hash = act.hash(&pending.hasher);
                if pending.count(hash, &act, at) {
                    return;
                }
                if pending.rows.len() < self.shared.limits.max_pending {
                    let row = AuditRecord::single(
                        at,
                        actor,
                        sub.map(str::to_owned),
                        action,
                        detail,
                        outcome,
                    );
                    pending.push(hash, row);
                    if pending.rows.len() == self.shared.limits.batch {
                        self.shared.full.notify_one();
                    }
                    return;
                }
                // Full (rare): be told when the writer takes the rows, before letting it.
                let mut taken = Box::pin(self.shared.taken.notified());
                taken.as_mut().enable();
                taken
            };
            self.shared.full.notify_one();
            taken.await;
        }
    }

    /// Waits until every act recorded before this call is written.
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.flush.send(ack).is_ok() {
            let _ = done.await;
        }
    }
}

impl AuditWriter {
    /// Writes the pending rows every window (or batch, or flush) until told to stop, or until
    /// every handle of the log is gone; then writes what is left.
    pub async fn run(self, mut stop: StopSignal) {
        let AuditWriter {
            store,
            shared,
            mut flushes,
        } = self;
        let mut acks = Vec::new();
        loop {
            let last = tokio::select! {
                () = tokio::time::sleep(shared.limits.window) => false,
                () = shared.full.notified() => false,
                () = stopped(&mut stop) => true,
                ack = flushes.recv() => match ack {
                    Some(ack) => {
                        acks.push(ack);
                        false
                    }
                    None => true,
                },
            };
            while let Ok(ack) = flushes.try_recv() {
                acks.push(ack);
            }
            write(&store, &shared).await;
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
            if last {
                return;
            }
        }
    }
}

/// Takes the pending rows and writes them, retrying a failed write a few times.
async fn write(store: &Arc<dyn AuditStore>, shared: &Shared) {
    let rows = shared
        .pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    shared.taken.notify_waiters();
    if rows.is_empty() {
        return;
    }
    let mut attempt = 0;
    loop {
        match store.append_audit(rows.clone()).await {
            Ok(()) => break,
            Err(e) if attempt < 5 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "audit write failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, rows = rows.len(), "audit rows could not be written");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantkeeper_core::SystemClock;
    use grantkeeper_store::{AuditFilter, MAX_PAGE};

    /// Many more distinct acts than may be pending at once, from many tasks, each also
    /// repeated: callers wait for room instead of dropping anything, and every act is counted
    /// once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_window_makes_callers_wait_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("audit.db").display());
        let store = grantkeeper_store::open(&url).await.unwrap();
        // Only a full pending set (or the window's end, long after the test) makes it write.
        let limits = Limits {
            window: Duration::from_secs(600),
            batch: usize::MAX,
            max_pending: 64,
        };
        let (log, writer) = AuditLog::with_limits(store.clone(), SystemClock::shared(), limits);
        let (_stop, signal) = tokio::sync::watch::channel(false);
        tokio::spawn(writer.run(signal));
        let users = 3_000;
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..8 {
            let log = log.clone();
            tasks.spawn(async move {
                for user in (task..users).step_by(8) {
                    for _ in 0..2 {
                        let sub = format!("u{user}");
                        log.record("key_x", Some(&sub), "token", String::new(), "ok")
                            .await;
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        log.flush().await;

        let mut rows = Vec::new();
        let mut before_id = None;
        loop {
            let page = store
                .audit(AuditFilter {
                    before_id,
                    limit: MAX_PAGE,
                    ..AuditFilter::default()
                })
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            before_id = Some(last.id);
            rows.extend(page);
        }
        let mut per_user = std::collections::HashMap::new();
        for r in &rows {
            *per_user.entry(r.sub.clone().unwrap()).or_insert(0) += r.times;
        }
        assert_eq!(per_user.len(), users, "every user's acts written");
        assert!(per_user.values().all(|&n| n == 2), "each act counted once");
        assert!(
            rows.len() < 2 * users,
            "repeats within a window share a row"
        );
    }
}
