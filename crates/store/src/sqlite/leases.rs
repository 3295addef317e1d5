//! Refresh leases: which instance may refresh a grant now.

use super::SqliteStore;
use super::conn::execute;
use super::grants::read_grant;
use crate::statements::{LEASE_REFRESH, RELEASE_LEASE};
use crate::{GrantRecord, RefreshLeaseStore, RefreshSuccess, Result, StoreError};
use async_trait::async_trait;
use time::OffsetDateTime;

#[async_trait]
impl RefreshLeaseStore for SqliteStore {
    async fn try_lease_refresh(
        &self,
        sub: &str,
        owner: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool> {
        // One statement, so one decision under the write lock. An unknown user fails the
        // foreign key, which the error mapping calls NotFound. The grant's row is not written.
        // A lease runs out by itself: lazy, it is not flushed on its own.
        let args = args![sub, owner, until, now];
        self.write_lazy(move |conn| Ok(execute(conn, LEASE_REFRESH, &args)? == 1))
            .await
    }

    async fn try_lease_refresh_reading(
        &self,
        sub: &str,
        owner: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<GrantRecord>> {
        // As try_lease_refresh, with the grant read in the same unit: one trip to the writer.
        let args = args![sub, owner, until, now];
        let sub = sub.to_owned();
        self.write_lazy(move |conn| {
            if execute(conn, LEASE_REFRESH, &args)? != 1 {
                return Ok(None);
            }
            read_grant(conn, &sub)?
                .map(Some)
                .ok_or(StoreError::NotFound)
        })
        .await
    }

    async fn release_refresh_lease(&self, sub: &str, owner: &str) -> Result<()> {
        let args = args![sub, owner];
        self.write_lazy(move |conn| execute(conn, RELEASE_LEASE, &args).map(drop))
            .await
    }

    async fn record_refresh_releasing(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: RefreshSuccess,
        owner: &str,
    ) -> Result<GrantRecord> {
        self.record_refresh_releasing_as(sub, expected_version, refresh, Some(owner))
            .await
    }
}
