//! Refresh leases: which instance may refresh a grant now. Taking one with the grant read, and
//! recording a refresh with its lease given back, are one call each (migration 14).

use super::PostgresStore;
use super::statements::LEASE_REFRESH_READING;
use crate::rows;
use crate::sql::{Engine, first};
use crate::statements::{LEASE_REFRESH, RELEASE_LEASE};
use crate::{GrantRecord, RefreshLeaseStore, RefreshSuccess, Result};
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
        // One statement, so one decision: instances racing for a grant nobody holds queue on
        // the key; the first inserts, the others then see its lease, unexpired and not theirs.
        // An unknown user fails the foreign key, which the error mapping calls NotFound. The
        // grant's row is not written, so its version does not move.
        let args = args![sub, owner, until, now];
        Ok(self.execute(LEASE_REFRESH.into(), args).await? == 1)
    }

    async fn try_lease_refresh_reading(
        &self,
        sub: &str,
        owner: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<GrantRecord>> {
        let args = args![sub, owner, until, now];
        let found = self
            .write_rows(LEASE_REFRESH_READING.into(), args, rows::grant_alone)
            .await?;
        Ok(first(found))
    }

    async fn release_refresh_lease(&self, sub: &str, owner: &str) -> Result<()> {
        self.execute(RELEASE_LEASE.into(), args![sub, owner])
            .await
            .map(drop)
    }

    async fn record_refresh_releasing(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: RefreshSuccess,
        owner: &str,
    ) -> Result<GrantRecord> {
        self.record_refresh_as(sub, expected_version, &refresh, Some(owner))
            .await
    }
}
