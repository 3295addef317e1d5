//! The webhook outbox: grant events not yet delivered. An event row is written in the
//! transaction of the state change it describes, so a change is never committed without it.

use super::{SqliteStore, map_sqlx};
use crate::rows::{self, unix};
use crate::{OutboxStore, PendingEvent, Result, StoreError};
use async_trait::async_trait;
use time::OffsetDateTime;

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn due_events(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<PendingEvent>> {
        // The partial index grant_events_due holds only undelivered rows, by due time.
        let found = sqlx::query(
            "SELECT id, sub, from_state, to_state, reason, at, attempts, next_attempt_at
               FROM grant_events
              WHERE delivered_at IS NULL AND next_attempt_at <= ?1
              ORDER BY id LIMIT ?2",
        )
        .bind(unix(now))
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await
        .map_err(map_sqlx)?;
        found.iter().map(rows::pending_event).collect()
    }

    async fn mark_delivered(&self, event_id: i64, at: OffsetDateTime) -> Result<()> {
        // Marking twice keeps the first delivery's time. An unknown id is NotFound.
        let done = sqlx::query(
            "UPDATE grant_events SET delivered_at = COALESCE(delivered_at, ?2) WHERE id = ?1",
        )
        .bind(event_id)
        .bind(unix(at))
        .execute(&self.write)
        .await
        .map_err(map_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn mark_failed(&self, event_id: i64, next_attempt_at: OffsetDateTime) -> Result<()> {
        // A late failure report of an event already delivered (a duplicate attempt) changes
        // nothing. An unknown id is NotFound.
        let done = sqlx::query(
            "UPDATE grant_events
                SET attempts = attempts + (delivered_at IS NULL),
                    next_attempt_at = iif(delivered_at IS NULL, ?2, next_attempt_at)
              WHERE id = ?1",
        )
        .bind(event_id)
        .bind(unix(next_attempt_at))
        .execute(&self.write)
        .await
        .map_err(map_sqlx)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
