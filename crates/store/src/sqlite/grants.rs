//! The broker's and operators' writes to grants, listing and deleting users.

use super::statements::{SELECT_GRANT, SELECT_USERS_AFTER, SELECT_USERS_FIRST};
use super::users::{append_event, write_grant};
use super::{SqliteStore, map_sqlx};
use crate::merge::{Merged, check_fence, merge_refresh, merge_state_update};
use crate::rows;
use crate::{
    GrantEvent, GrantRecord, GrantStore, RefreshSuccess, Result, StateUpdate, StoreError, UserPage,
    page_limit, user_page,
};
use async_trait::async_trait;
use grantkeeper_core::GrantState;
use sqlx::SqliteConnection;
use time::OffsetDateTime;

#[async_trait]
impl GrantStore for SqliteStore {
    async fn grant(&self, sub: &str) -> Result<Option<GrantRecord>> {
        let mut conn = self.read.acquire().await.map_err(map_sqlx)?;
        read_grant(&mut conn, sub).await
    }

    async fn record_refresh(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: RefreshSuccess,
    ) -> Result<GrantRecord> {
        let at = refresh.at;
        let sub = sub.to_owned();
        let durable = must_be_flushed(&refresh);
        let (grant, _) = self
            .group
            .queue(
                move |conn| {
                    Box::pin(async move {
                        fenced_write_in(conn, &sub, Some(expected_version), at, |held| {
                            merge_refresh(held, &refresh)
                        })
                        .await
                    })
                },
                durable,
            )
            .await?;
        Ok(grant)
    }

    async fn update_grant_state(
        &self,
        sub: &str,
        expected_version: Option<i64>,
        update: StateUpdate,
    ) -> Result<(GrantRecord, Option<GrantEvent>)> {
        let at = update.at;
        self.fenced_write(sub, expected_version, at, |held| {
            merge_state_update(held, &update)
        })
        .await
    }

    async fn list_users(&self, after: Option<&str>, limit: u32) -> Result<UserPage> {
        let limit = page_limit(limit);
        let fetch = i64::from(limit) + 1;
        let query = match after {
            None => sqlx::query(SELECT_USERS_FIRST).bind(fetch),
            Some(after) => sqlx::query(SELECT_USERS_AFTER).bind(fetch).bind(after),
        };
        let found = query.fetch_all(&self.read).await.map_err(map_sqlx)?;
        let users = found
            .iter()
            .map(rows::user_with_grant)
            .collect::<Result<Vec<_>>>()?;
        Ok(user_page(users, limit))
    }

    async fn delete_user(&self, sub: &str) -> Result<bool> {
        // The foreign keys cascade to the grant, its events (undelivered ones too) and the
        // sessions, all in this transaction. Audit rows name the user without a foreign key:
        // they are history and stay.
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM users WHERE sub = ?1")
            .bind(sub)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_users(&self) -> Result<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.read)
            .await
            .map_err(map_sqlx)?;
        u64::try_from(count).map_err(|_| StoreError::Corrupt("the user count is negative".into()))
    }

    async fn count_grants_by_state(&self) -> Result<Vec<(GrantState, u64)>> {
        self.grants_by_state().await
    }
}

impl SqliteStore {
    /// Reads the grant under the write lock, checks the fence, writes what `merge` decides and
    /// the event of its change of state, and answers with the row as written. Nothing is
    /// written when the fence fails.
    async fn fenced_write(
        &self,
        sub: &str,
        expected_version: Option<i64>,
        at: OffsetDateTime,
        merge: impl FnOnce(GrantRecord) -> Merged + Send,
    ) -> Result<(GrantRecord, Option<GrantEvent>)> {
        let mut tx = self.begin_write().await?;
        let written = fenced_write_in(&mut tx, sub, expected_version, at, merge).await?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(written)
    }
}

/// [`SqliteStore::fenced_write`] within the caller's transaction.
/// A refresh is flushed to disk before anyone is told only when it brings a refresh token; an
/// access token alone need not survive a power loss, the next demand refreshes again (see
/// `GroupCommit::write_lazy`).
pub(super) fn must_be_flushed(refresh: &RefreshSuccess) -> bool {
    refresh.refresh_token.is_some()
}

pub(super) async fn fenced_write_in(
    conn: &mut SqliteConnection,
    sub: &str,
    expected_version: Option<i64>,
    at: OffsetDateTime,
    merge: impl FnOnce(GrantRecord) -> Merged + Send,
) -> Result<(GrantRecord, Option<GrantEvent>)> {
    let held = read_grant(conn, sub).await?.ok_or(StoreError::NotFound)?;
    check_fence(&held, expected_version)?;
    let held_version = held.version;
    let merged = merge(held);
    write_grant(conn, &merged.grant, Some(held_version)).await?;
    let event = match &merged.change {
        Some(change) => Some(append_event(conn, sub, change, at).await?),
        None => None,
    };
    let grant = read_grant(conn, sub).await?.ok_or_else(|| {
        StoreError::Corrupt("the grant just written could not be read back".into())
    })?;
    Ok((grant, event))
}

pub(super) async fn read_grant(
    conn: &mut SqliteConnection,
    sub: &str,
) -> Result<Option<GrantRecord>> {
    let row = sqlx::query(SELECT_GRANT)
        .bind(sub)
        .fetch_optional(conn)
        .await
        .map_err(map_sqlx)?;
    row.as_ref().map(rows::grant_alone).transpose()
}
