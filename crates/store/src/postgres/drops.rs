//! Drops heard from the other processes on the database (migration 26): `LISTEN` on
//! `grantkeeper_drops` for news at once, and a re-read of the recent notices every `recheck`
//! and after the listener (re)connects, for what a notification did not bring (it was sent
//! while the listener was away). Notices are told once each, by id.

use super::PostgresStore;
use crate::{DropFeed, Dropped};
use grantkeeper_core::SharedClock;
use sqlx::postgres::{PgListener, PgPool};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{MissedTickBehavior, interval};

/// The channel migration 26's triggers notify.
const CHANNEL: &str = "grantkeeper_drops";
/// How far back, in seconds of the database's clock, a re-read looks.
const REREAD_WINDOW: i64 = 300;
/// A feed that could not re-read for this long may have missed notices: it tells
/// [`Dropped::Everything`]. Half the window, so that clocks apart do not matter.
const BLIND_AFTER: Duration = Duration::from_secs(150);
/// Notices older than this (seconds) are deleted, every [`PRUNE_EVERY`] re-reads.
const KEEP: i64 = 3600;
const PRUNE_EVERY: u32 = 60;
/// The pause before a listener that failed connects again.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// What the listener heard.
enum Heard {
    Notice(i64, Dropped),
    /// It (re)connected: notifications sent before are lost to it.
    Connected,
}

impl PostgresStore {
    /// Starts the listener and the re-reader on this store's pool; both stop when the feed is
    /// dropped.
    pub(crate) fn start_drop_feed(&self, recheck: Duration, clock: SharedClock) -> DropFeed {
        let (told, feed) = mpsc::channel(1024);
        let (heard, hearing) = mpsc::unbounded_channel();
        let listener = tokio::spawn(listen(self.pool.clone(), heard));
        let reader = tokio::spawn(tell(self.pool.clone(), hearing, told, recheck, clock));
        DropFeed::new(feed, vec![listener, reader])
    }
}

/// `ID KIND VALUE`, as migration 26 notifies.
fn parse(payload: &str) -> Option<(i64, Dropped)> {
    let mut parts = payload.splitn(3, ' ');
    let id = parts.next()?.parse().ok()?;
    let kind = parts.next()?;
    let value = parts.next()?.to_owned();
    Some((id, dropped(kind, value)?))
}

fn dropped(kind: &str, value: String) -> Option<Dropped> {
    match kind {
        "api_key" => Some(Dropped::ApiKey(value)),
        "grant" => Some(Dropped::Grant(value)),
        _ => None,
    }
}

async fn listen(pool: PgPool, heard: mpsc::UnboundedSender<Heard>) {
    while !heard.is_closed() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for drops; trying again");
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "cannot listen for drops; trying again");
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        }
        if heard.send(Heard::Connected).is_err() {
            return;
        }
        loop {
            let told = match listener.try_recv().await {
                Ok(Some(notification)) => match parse(notification.payload()) {
                    Some((id, dropped)) => heard.send(Heard::Notice(id, dropped)),
                    None => continue,
                },
                // Connected again (and listening again) at once: what was said meanwhile is lost.
                Ok(None) => heard.send(Heard::Connected),
                Err(e) => {
                    tracing::warn!(error = %e, "listening for drops failed; connecting again");
                    tokio::time::sleep(RECONNECT_PAUSE).await;
                    break;
                }
            };
            if told.is_err() {
                return;
            }
        }
    }
}

/// Tells each notice once: as heard, or found by a re-read.
async fn tell(
    pool: PgPool,
    mut hearing: mpsc::UnboundedReceiver<Heard>,
    told: mpsc::Sender<Dropped>,
    recheck: Duration,
    clock: SharedClock,
) {
    let mut seen = BTreeSet::new();
    // The clock's monotonic reading at the last successful re-read.
    let mut last_read: Option<Duration> = None;
    let mut reads: u32 = 0;
    let mut ticks = interval(recheck);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let reread = tokio::select! {
            heard = hearing.recv() => match heard {
                None => return,
                Some(Heard::Notice(id, dropped)) => {
                    if seen.insert(id) && told.send(dropped).await.is_err() {
                        return;
                    }
                    false
                }
                Some(Heard::Connected) => true,
            },
            _ = ticks.tick() => true,
            () = told.closed() => return,
        };
        if !reread {
            continue;
        }
        let recent = match read_recent(&pool).await {
            Ok(recent) => recent,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the recent drops; trying again");
                continue;
            }
        };
        if last_read.is_some_and(|at| clock.monotonic().saturating_sub(at) > BLIND_AFTER)
            && told.send(Dropped::Everything).await.is_err()
        {
            return;
        }
        let oldest = recent.iter().map(|(id, _, _)| *id).min();
        for (id, kind, value) in recent {
            if !seen.insert(id) {
                continue;
            }
            if last_read.is_some() {
                tracing::debug!(id, "a drop was found by a re-read, not heard");
            }
            if let Some(dropped) = dropped(&kind, value)
                && told.send(dropped).await.is_err()
            {
                return;
            }
        }
        // Only ids still in the window can come again.
        match oldest {
            Some(oldest) => seen.retain(|id| *id >= oldest),
            None => seen.clear(),
        }
        last_read = Some(clock.monotonic());
        reads = reads.wrapping_add(1);
        if reads.is_multiple_of(PRUNE_EVERY)
            && let Err(e) = prune(&pool).await
        {
            tracing::warn!(error = %e, "pruning old drop notices failed");
        }
    }
}

async fn read_recent(pool: &PgPool) -> Result<Vec<(i64, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, kind, value FROM drop_notices
          WHERE at >= extract(epoch FROM now())::BIGINT - $1 ORDER BY id",
    )
    .bind(REREAD_WINDOW)
    .fetch_all(pool)
    .await
}

async fn prune(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM drop_notices WHERE at < extract(epoch FROM now())::BIGINT - $1")
        .bind(KEEP)
        .execute(pool)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_parse() {
        assert_eq!(
            parse("12 api_key 3f9a"),
            Some((12, Dropped::ApiKey("3f9a".into())))
        );
        assert_eq!(
            parse("7 grant 1234 5"),
            Some((7, Dropped::Grant("1234 5".into())))
        );
        assert_eq!(parse("x grant 1"), None);
        assert_eq!(parse("1 other 1"), None);
        assert_eq!(parse("1 grant"), None);
    }
}
