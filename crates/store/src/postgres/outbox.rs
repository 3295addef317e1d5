//! The webhook outbox: grant events not yet delivered. An event row is written in the
//! transaction of the state change it describes, so a change is never committed without it.

use super::{PostgresStore, map_pg, retrying};
use crate::rows::{self, unix};
use crate::{OutboxStore, PendingEvent, Result, StoreError};
use async_trait::async_trait;
use time::OffsetDateTime;

#[async_trait]
impl OutboxStore for PostgresStore {
    async fn due_events(&self, now: OffsetDateTime, limit: u32) -> Result<Vec<PendingEvent>> {
        // The partial index grant_events_due holds only undelivered rows, by due time.
        let found = sqlx::query(
            "SELECT id, sub, from_state, to_state, reason, at, attempts, next_attempt_at
               FROM grant_events
              WHERE delivered_at IS NULL AND next_attempt_at <= $1
              ORDER BY id LIMIT $2",
        )
        .bind(unix(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_pg)?;
        found.iter().map(rows::pending_event).collect()
    }

    async fn mark_delivered(&self, event_id: i64, at: OffsetDateTime) -> Result<()> {
        // Marking twice keeps the first delivery's time. An unknown id is NotFound.
        let updated = retrying(|| async {
            let done = sqlx::query(
                "UPDATE grant_events SET delivered_at = COALESCE(delivered_at, $2) WHERE id = $1",
            )
            .bind(event_id)
            .bind(unix(at))
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        })
        .await?;
        event_found(updated)
    }

    async fn mark_failed(&self, event_id: i64, next_attempt_at: OffsetDateTime) -> Result<()> {
        // A late failure report of an event already delivered (a duplicate attempt) changes
        // nothing. An unknown id is NotFound.
        let updated = retrying(|| async {
            let done = sqlx::query(
                "UPDATE grant_events
                    SET attempts = attempts + CASE WHEN delivered_at IS NULL THEN 1 ELSE 0 END,
                        next_attempt_at =
                            CASE WHEN delivered_at IS NULL THEN $2 ELSE next_attempt_at END
                  WHERE id = $1",
            )
            .bind(event_id)
            .bind(unix(next_attempt_at))
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected())
        })
        .await?;
        event_found(updated)
    }
}

fn event_found(rows_affected: u64) -> Result<()> {
    if rows_affected == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}
