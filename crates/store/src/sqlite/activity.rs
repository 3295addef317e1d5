//! Per-minute activity for the admin console, and grants counted by state.

use super::{SqliteStore, map_sqlx};
use crate::activity;
use crate::{ActivityPoint, ActivityStore, Result};
use async_trait::async_trait;
use grantkeeper_core::GrantState;
use time::OffsetDateTime;

#[async_trait]
impl ActivityStore for SqliteStore {
    async fn add_activity(&self, points: Vec<ActivityPoint>) -> Result<()> {
        let rows = activity::rows_of(points);
        if rows.is_empty() {
            return Ok(());
        }
        // One transaction for the batch: one commit (and one fsync) per flush, and a flush
        // that fails leaves nothing half-added for the caller to add again.
        let mut tx = self.begin_write().await?;
        for row in &rows {
            sqlx::query(
                "INSERT INTO activity (minute, series, count, total_ms, max_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (minute, series) DO UPDATE
                    SET count = activity.count + excluded.count,
                        total_ms = activity.total_ms + excluded.total_ms,
                        max_ms = MAX(activity.max_ms, excluded.max_ms)",
            )
            .bind(row.minute)
            .bind(&row.series)
            .bind(row.count)
            .bind(row.total_ms)
            .bind(row.max_ms)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        }
        tx.commit().await.map_err(map_sqlx)?;
        Ok(())
    }

    async fn activity(
        &self,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Vec<ActivityPoint>> {
        let found = sqlx::query(
            "SELECT minute, series, count, total_ms, max_ms FROM activity
              WHERE minute >= ?1 AND minute < ?2
              ORDER BY minute, series",
        )
        .bind(since.unix_timestamp())
        .bind(until.unix_timestamp())
        .fetch_all(&self.read)
        .await
        .map_err(map_sqlx)?;
        found.iter().map(activity::point).collect()
    }

    async fn prune_activity(&self, before: OffsetDateTime) -> Result<u64> {
        let done = sqlx::query("DELETE FROM activity WHERE minute < ?1")
            .bind(before.unix_timestamp())
            .execute(&self.write)
            .await
            .map_err(map_sqlx)?;
        Ok(done.rows_affected())
    }
}

impl SqliteStore {
    /// [`crate::GrantStore::count_grants_by_state`].
    pub(super) async fn grants_by_state(&self) -> Result<Vec<(GrantState, u64)>> {
        let found: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM grants GROUP BY state")
                .fetch_all(&self.read)
                .await
                .map_err(map_sqlx)?;
        activity::grants_by_state(found)
    }
}
