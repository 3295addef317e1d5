//! Refresh leases: which instance may refresh a grant now.

use super::grants::{fenced_write_in, must_be_flushed, read_grant};
use super::{SqliteStore, map_sqlx};
use crate::merge::merge_refresh;
use crate::rows::unix;
use crate::{GrantRecord, RefreshLeaseStore, RefreshSuccess, Result, StoreError};
use async_trait::async_trait;
use time::OffsetDateTime;

/// Takes or extends a lease: inserted when none is held, taken over only when it ended by
/// `?4` or is the owner's own; otherwise no row is counted.
const LEASE_REFRESH: &str =
    "INSERT INTO refresh_leases (sub, owner, lease_until) VALUES (?1, ?2, ?3)
     ON CONFLICT (sub) DO UPDATE
        SET owner = excluded.owner, lease_until = excluded.lease_until
      WHERE refresh_leases.lease_until <= ?4
         OR refresh_leases.owner = excluded.owner";

#[async_trait]
impl RefreshLeaseStore for SqliteStore {
    async fn try_lease_refresh(
        &self,
        sub: &str,
        owner: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        // One statement, so one decision under the write lock: a new lease is inserted, a held
        // one is taken over only when it ended by `now` or is the owner's own; otherwise
        // nothing changes and no row is counted. An unknown user fails the foreign key, which
        // the error mapping calls NotFound. The grant's row is not written.
        let (sub, owner) = (sub.to_owned(), owner.to_owned());
        self.group
            .write_lazy(move |conn| {
                Box::pin(async move {
                    let done = sqlx::query(LEASE_REFRESH)
                        .bind(sub)
                        .bind(owner)
                        .bind(unix(until))
                        .bind(unix(now))
                        .execute(conn)
                        .await
                        .map_err(map_sqlx)?;
                    Ok(done.rows_affected() == 1)
                })
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
        // As try_lease_refresh, with the grant read on the writer connection inside the same
        // transaction: one trip to the store where a lease and a read take two.
        let (sub, owner) = (sub.to_owned(), owner.to_owned());
        self.group
            .write_lazy(move |conn| {
                Box::pin(async move {
                    let done = sqlx::query(LEASE_REFRESH)
                        .bind(&sub)
                        .bind(owner)
                        .bind(unix(until))
                        .bind(unix(now))
                        .execute(&mut *conn)
                        .await
                        .map_err(map_sqlx)?;
                    if done.rows_affected() != 1 {
                        return Ok(None);
                    }
                    read_grant(conn, &sub)
                        .await?
                        .map(Some)
                        .ok_or(StoreError::NotFound)
                })
            })
            .await
    }

    async fn release_refresh_lease(&self, sub: &str, owner: &str) -> Result<()> {
        // Another owner's lease (this one's ran out and was taken) stays.
        let (sub, owner) = (sub.to_owned(), owner.to_owned());
        self.group
            .write_lazy(move |conn| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM refresh_leases WHERE sub = ?1 AND owner = ?2")
                        .bind(sub)
                        .bind(owner)
                        .execute(conn)
                        .await
                        .map_err(map_sqlx)?;
                    Ok(())
                })
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
        let at = refresh.at;
        let durable = must_be_flushed(&refresh);
        let (sub, owner) = (sub.to_owned(), owner.to_owned());
        // One savepoint of the group commit: a failed fence rolls back to it, lease included.
        let (grant, _) = self
            .group
            .queue(
                move |conn| {
                    Box::pin(async move {
                        let written =
                            fenced_write_in(&mut *conn, &sub, Some(expected_version), at, |held| {
                                merge_refresh(held, &refresh)
                            })
                            .await?;
                        sqlx::query("DELETE FROM refresh_leases WHERE sub = ?1 AND owner = ?2")
                            .bind(&sub)
                            .bind(&owner)
                            .execute(conn)
                            .await
                            .map_err(map_sqlx)?;
                        Ok(written)
                    })
                },
                durable,
            )
            .await?;
        Ok(grant)
    }
}
