//! What the other instances on the database drop, forgotten here at once: a revoked or deleted
//! API key leaves the key cache, and a grant whose tokens were dropped (a disconnect, a
//! deletion, a security event, a revocation) leaves the broker's token cache, so that no
//! instance honours the one or hands out the other after another instance dropped it. The
//! store tells (on PostgreSQL: `LISTEN`, with a re-read every [`RECHECK`] for a notification
//! missed); on SQLite one process serves, and its own paths forget what they drop.

use crate::apikeys::KeyCache;
use crate::workers::{StopSignal, stopped};
use grantkeeper_broker::Broker;
use grantkeeper_core::SharedClock;
use grantkeeper_store::{DropFeed, Dropped, SharedStore};
use std::sync::Arc;
use std::time::Duration;

/// How often the store re-reads the recent drops in case a notification was missed.
pub const RECHECK: Duration = Duration::from_secs(5);

/// Forgets what the store says was dropped, in the background ([`crate::workers`]).
pub(crate) struct DropWatcher {
    feed: DropFeed,
    broker: Broker,
    keys: Arc<KeyCache>,
}

impl DropWatcher {
    /// None when the store serves one process (SQLite).
    pub(crate) fn new(
        store: &SharedStore,
        broker: Broker,
        keys: Arc<KeyCache>,
        clock: SharedClock,
    ) -> Option<DropWatcher> {
        let feed = store.drop_feed(RECHECK, clock)?;
        Some(DropWatcher { feed, broker, keys })
    }

    /// Forgets what is dropped until told to stop or the feed ends.
    pub(crate) async fn run(self, mut stop: StopSignal) {
        let DropWatcher {
            mut feed,
            broker,
            keys,
        } = self;
        loop {
            let dropped = tokio::select! {
                dropped = feed.next() => dropped,
                () = stopped(&mut stop) => return,
            };
            let Some(dropped) = dropped else { return };
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
    }
}
