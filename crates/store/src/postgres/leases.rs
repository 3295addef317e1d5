//! Refresh leases: which instance may refresh a grant now.

use super::{PostgresStore, retrying};
use crate::merge::merge_refresh;
use crate::rows::unix;
use crate::{GrantRecord, GrantStore, RefreshLeaseStore, RefreshSuccess, Result, StoreError};
use async_trait::async_trait;
use time::OffsetDateTime;

#[async_trait]
impl RefreshLeaseStore for PostgresStore {
    async fn try_lease_refresh(
        &self,
        sub: &str,
        owner: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        // One statement, so one decision: a new lease is inserted; a held one is taken over
        // only when it ended by `now` or is the owner's own, else nothing changes and no row is
        // counted. Instances racing for a grant nobody holds queue on the key: the first
        // inserts, the others then see its lease, unexpired and not theirs. An unknown user
        // fails the foreign key, which the error mapping calls NotFound. The grant's row is
        // not written, so its version does not move.
        retrying(|| async {
            let done = sqlx::query(
                "INSERT INTO refresh_leases AS l (sub, owner, lease_until) VALUES ($1, $2, $3)
                 ON CONFLICT (sub) DO UPDATE
                    SET owner = EXCLUDED.owner, lease_until = EXCLUDED.lease_until
                  WHERE l.lease_until <= $4 OR l.owner = EXCLUDED.owner",
            )
            .bind(sub)
            .bind(owner)
            .bind(unix(until))
            .bind(unix(now))
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
        .await
    }

    async fn try_lease_refresh_reading(
        &self,
        sub: &str,
        owner: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<GrantRecord>> {
        // Two statements, not one transaction: under READ COMMITTED a statement that waited
        // on the previous holder's lease row still reads from the snapshot it started with, so
        // the grant is read by a statement of its own, after the lease is committed.
        if !self.try_lease_refresh(sub, owner, until, now).await? {
            return Ok(None);
        }
        self.grant(sub).await?.map(Some).ok_or(StoreError::NotFound)
    }

    async fn release_refresh_lease(&self, sub: &str, owner: &str) -> Result<()> {
        // Another owner's lease (this one's ran out and was taken) stays.
        retrying(|| async {
            sqlx::query("DELETE FROM refresh_leases WHERE sub = $1 AND owner = $2")
                .bind(sub)
                .bind(owner)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }

    async fn record_refresh_releasing(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: RefreshSuccess,
        owner: &str,
    ) -> Result<GrantRecord> {
        let merge = |held| merge_refresh(held, &refresh);
        let (grant, _) = retrying(|| {
            self.fenced_write_once(sub, Some(expected_version), refresh.at, &merge, Some(owner))
        })
        .await?;
        Ok(grant)
    }
}
