//! The broker's and operators' writes to grants, listing and deleting users.

use super::statements::{SELECT_GRANT, SELECT_USERS_AFTER, SELECT_USERS_FIRST};
use super::users::{append_event, lock_grant, write_grant};
use super::{PgResult, PostgresStore, map_pg, retrying};
use crate::merge::{Merged, check_fence, merge_refresh, merge_state_update};
use crate::rows;
use crate::{
    GrantEvent, GrantRecord, GrantStore, RefreshSuccess, Result, StateUpdate, StoreError, UserPage,
    page_limit, user_page,
};
use async_trait::async_trait;
use grantkeeper_core::GrantState;
use time::OffsetDateTime;

#[async_trait]
impl GrantStore for PostgresStore {
    async fn grant(&self, sub: &str) -> Result<Option<GrantRecord>> {
        let row = sqlx::query(SELECT_GRANT)
            .bind(sub)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_pg)?;
        row.as_ref().map(rows::grant_alone).transpose()
    }

    async fn record_refresh(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: RefreshSuccess,
    ) -> Result<GrantRecord> {
        let merge = |held| merge_refresh(held, &refresh);
        let (grant, _) = retrying(|| {
            self.fenced_write_once(sub, Some(expected_version), refresh.at, &merge, None)
        })
        .await?;
        Ok(grant)
    }

    async fn update_grant_state(
        &self,
        sub: &str,
        expected_version: Option<i64>,
        update: StateUpdate,
    ) -> Result<(GrantRecord, Option<GrantEvent>)> {
        let merge = |held| merge_state_update(held, &update);
        retrying(|| self.fenced_write_once(sub, expected_version, update.at, &merge, None)).await
    }

    async fn list_users(&self, after: Option<&str>, limit: u32) -> Result<UserPage> {
        let limit = page_limit(limit);
        let fetch = i64::from(limit) + 1;
        let query = match after {
            None => sqlx::query(SELECT_USERS_FIRST).bind(fetch),
            Some(after) => sqlx::query(SELECT_USERS_AFTER).bind(fetch).bind(after),
        };
        let found = query.fetch_all(&self.pool).await.map_err(map_pg)?;
        let users = found
            .iter()
            .map(rows::user_with_grant)
            .collect::<Result<Vec<_>>>()?;
        Ok(user_page(users, limit))
    }

    async fn delete_user(&self, sub: &str) -> Result<bool> {
        // The foreign keys cascade to the grant, its events (undelivered ones too) and the
        // sessions, all in this statement's transaction. Audit rows name the user without a
        // foreign key: they are history and stay.
        retrying(|| async {
            let done = sqlx::query("DELETE FROM users WHERE sub = $1")
                .bind(sub)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() > 0)
        })
        .await
    }

    async fn count_users(&self) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(map_pg)?;
        u64::try_from(count).map_err(|_| StoreError::Corrupt("the user count is negative".into()))
    }

    async fn count_grants_by_state(&self) -> Result<Vec<(GrantState, u64)>> {
        self.grants_by_state().await
    }
}

impl PostgresStore {
    /// Locks the grant, checks the fence, writes what `merge` decides and the event of its
    /// change of state, and answers with the row as written. Nothing is written when the fence
    /// fails. Concurrent writers of one grant queue on its row lock, so each checks its fence
    /// against what the one before it committed.
    /// One fenced write of a grant in its own transaction; with `release_lease_of`, that
    /// owner's refresh lease is given back in the same transaction.
    pub(super) async fn fenced_write_once(
        &self,
        sub: &str,
        expected_version: Option<i64>,
        at: OffsetDateTime,
        merge: &(impl Fn(GrantRecord) -> Merged + Sync),
        release_lease_of: Option<&str>,
    ) -> PgResult<(GrantRecord, Option<GrantEvent>)> {
        let mut tx = self.begin().await?;
        let held = lock_grant(&mut tx, sub)
            .await?
            .ok_or(StoreError::NotFound)?;
        check_fence(&held, expected_version)?;
        let held_version = held.version;
        let merged = merge(held);
        let grant = write_grant(&mut tx, &merged.grant, Some(held_version)).await?;
        let event = match &merged.change {
            Some(change) => Some(append_event(&mut tx, sub, change, at).await?),
            None => None,
        };
        if let Some(owner) = release_lease_of {
            sqlx::query("DELETE FROM refresh_leases WHERE sub = $1 AND owner = $2")
                .bind(sub)
                .bind(owner)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((grant, event))
    }
}
