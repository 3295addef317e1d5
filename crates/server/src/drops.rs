//! What the other instances on the database drop, forgotten here at once: a revoked or deleted
//! API key leaves the key cache, and a grant whose tokens were dropped (a disconnect, a
//! deletion, a security event, a revocation) leaves the broker's token cache, so that no
//! instance honours the one or hands out the other after another instance dropped it. The
//! store tells (on PostgreSQL: `LISTEN`, with a re-read every [`RECHECK`] for a notification
//! missed); on SQLite one process serves, and its own paths forget what they drop.

use crate::apikeys::KeyCache;
use grantkeeper_broker::Broker;
use grantkeeper_store::{Dropped, SharedStore};
use std::sync::Arc;
use std::time::Duration;

/// How often the store re-reads the recent drops in case a notification was missed.
pub const RECHECK: Duration = Duration::from_secs(5);

/// Forgets what the store says was dropped; stops when dropped (with the app).
pub(crate) struct DropWatcher {
    task: tokio::task::JoinHandle<()>,
}

impl DropWatcher {
    /// None when the store serves one process (SQLite).
    pub(crate) fn start(
        store: &SharedStore,
        broker: Broker,
        keys: Arc<KeyCache>,
    ) -> Option<DropWatcher> {
        let mut feed = store.drop_feed(RECHECK)?;
        let task = tokio::spawn(async move {
            while let Some(dropped) = feed.next().await {
                match dropped {
                    Dropped::ApiKey(hash) => {
                        tracing::debug!("an API key was dropped elsewhere; forgotten");
                        keys.forget(&hash);
                    }
                    Dropped::Grant(sub) => {
                        tracing::debug!(%sub, "a grant's tokens were dropped elsewhere; forgotten");
                        broker.forget(&sub);
                    }
                    Dropped::Everything => {
                        tracing::info!(
                            "drops may have been missed while the store was unreachable; \
                             forgetting every cached key and token"
                        );
                        keys.clear();
                        broker.forget_everything();
                    }
                }
            }
        });
        Some(DropWatcher { task })
    }
}

impl Drop for DropWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
