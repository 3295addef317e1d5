//! Per-minute activity for the admin console, and grants counted by state.

use super::{PostgresStore, map_pg, retrying};
use crate::activity;
use crate::{ActivityPoint, ActivityStore, Result};
use async_trait::async_trait;
use grantkeeper_core::GrantState;
use time::OffsetDateTime;

#[async_trait]
impl ActivityStore for PostgresStore {
    async fn add_activity(&self, points: Vec<ActivityPoint>) -> Result<()> {
        let rows = activity::rows_of(points);
        if rows.is_empty() {
            return Ok(());
        }
        // The batch travels as one array per column into one statement: one round trip and one
        // commit per flush. `rows_of` made the keys unique (an upsert may not touch a row twice
        // in one statement) and sorted, so instances flushing together lock the rows they share
        // in the same order and do not deadlock.
        let minute: Vec<i64> = rows.iter().map(|r| r.minute).collect();
        let series: Vec<&str> = rows.iter().map(|r| r.series.as_str()).collect();
        let count: Vec<i64> = rows.iter().map(|r| r.count).collect();
        let total_ms: Vec<i64> = rows.iter().map(|r| r.total_ms).collect();
        let max_ms: Vec<i64> = rows.iter().map(|r| r.max_ms).collect();
        retrying(|| async {
            sqlx::query(
                "INSERT INTO activity AS a (minute, series, count, total_ms, max_ms)
                 SELECT minute, series, count, total_ms, max_ms
                   FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::BIGINT[],
                               $5::BIGINT[])
                        WITH ORDINALITY AS batch (minute, series, count, total_ms, max_ms, n)
                  ORDER BY n
                 ON CONFLICT (minute, series) DO UPDATE
                    SET count = a.count + EXCLUDED.count,
                        total_ms = a.total_ms + EXCLUDED.total_ms,
                        max_ms = GREATEST(a.max_ms, EXCLUDED.max_ms)",
            )
            .bind(&minute)
            .bind(&series)
            .bind(&count)
            .bind(&total_ms)
            .bind(&max_ms)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    async fn activity(
        &self,
        since: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Result<Vec<ActivityPoint>> {
        let found = sqlx::query(
            "SELECT minute, series, count, total_ms, max_ms FROM activity
              WHERE minute >= $1 AND minute < $2
              ORDER BY minute, series",
        )
        .bind(since.unix_timestamp())
        .bind(until.unix_timestamp())
        .fetch_all(&self.pool)
        .await
        .map_err(map_pg)?;
        found.iter().map(activity::point).collect()
    }

    async fn prune_activity(&self, before: OffsetDateTime) -> Result<u64> {
        retrying(|| async {
            let done = sqlx::query("DELETE FROM activity WHERE minute < $1")
                .bind(before.unix_timestamp())
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected())
        })
        .await
    }
}

impl PostgresStore {
    /// [`crate::GrantStore::count_grants_by_state`].
    pub(super) async fn grants_by_state(&self) -> Result<Vec<(GrantState, u64)>> {
        let found: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM grants GROUP BY state")
                .fetch_all(&self.pool)
                .await
                .map_err(map_pg)?;
        activity::grants_by_state(found)
    }
}
