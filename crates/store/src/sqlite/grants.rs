//! The broker's and operators' writes to grants, listing and deleting users.

use super::SqliteStore;
use super::conn::{execute, one, rows};
use super::users::{append_event, write_grant};
use crate::merge::{Merged, check_fence, merge_refresh, merge_state_update};
use crate::statements::{SELECT_GRANT, SELECT_USERS_AFTER, SELECT_USERS_FIRST};
use crate::{
    GrantEvent, GrantRecord, GrantStore, RefreshSuccess, Result, StateUpdate, StoreError, UserPage,
    page_limit, rows as read, user_page,
};
use async_trait::async_trait;
use grantkeeper_core::GrantState;
use rusqlite::Connection;
use time::OffsetDateTime;

#[async_trait]
impl GrantStore for SqliteStore {
    async fn grant(&self, sub: &str) -> Result<Option<GrantRecord>> {
        let sub = sub.to_owned();
        self.read(move |conn| read_grant(conn, &sub)).await
    }

    async fn record_refresh(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: RefreshSuccess,
    ) -> Result<GrantRecord> {
        self.record_refresh_releasing_as(sub, expected_version, refresh, None)
            .await
    }

    async fn update_grant_state(
        &self,
        sub: &str,
        expected_version: Option<i64>,
        update: StateUpdate,
    ) -> Result<(GrantRecord, Option<GrantEvent>)> {
        let sub = sub.to_owned();
        self.write(move |conn| {
            fenced_write_in(conn, &sub, expected_version, update.at, |held| {
                merge_state_update(held, &update)
            })
        })
        .await
    }

    async fn list_users(&self, after: Option<&str>, limit: u32) -> Result<UserPage> {
        let limit = page_limit(limit);
        let fetch = i64::from(limit) + 1;
        let (sql, args) = match after {
            None => (SELECT_USERS_FIRST, args![fetch]),
            Some(after) => (SELECT_USERS_AFTER, args![fetch, after]),
        };
        let users = self
            .read(move |conn| rows(conn, sql, &args, read::user_with_grant))
            .await?;
        Ok(user_page(users, limit))
    }

    async fn delete_user(&self, sub: &str) -> Result<bool> {
        // The foreign keys cascade to the grant, its events (undelivered ones too) and the
        // sessions, all in this unit. Audit rows name the user without a foreign key: they are
        // history and stay.
        let args = args![sub];
        let deleted = self
            .write(move |conn| execute(conn, "DELETE FROM users WHERE sub = $1", &args))
            .await?;
        Ok(deleted > 0)
    }

    async fn count_users(&self) -> Result<u64> {
        crate::counts::users(self).await
    }

    async fn count_grants_by_state(&self) -> Result<Vec<(GrantState, u64)>> {
        crate::counts::grants_by_state(self).await
    }
}

impl SqliteStore {
    /// A recorded refresh, with `owner`'s lease given back in the same unit when given. A
    /// refresh is flushed to disk before anyone is told only when it brings a refresh token; an
    /// access token alone need not survive a power loss, the next demand refreshes again.
    pub(super) async fn record_refresh_releasing_as(
        &self,
        sub: &str,
        expected_version: i64,
        refresh: RefreshSuccess,
        owner: Option<&str>,
    ) -> Result<GrantRecord> {
        let durable = refresh.refresh_token.is_some();
        let (sub, owner) = (sub.to_owned(), owner.map(str::to_owned));
        let unit = move |conn: &Connection| {
            // One savepoint: a failed fence rolls back to it, lease included.
            let (grant, _) =
                fenced_write_in(conn, &sub, Some(expected_version), refresh.at, |held| {
                    merge_refresh(held, &refresh)
                })?;
            if let Some(owner) = &owner {
                execute(
                    conn,
                    crate::statements::RELEASE_LEASE,
                    &args![sub.as_str(), owner.as_str()],
                )?;
            }
            Ok(grant)
        };
        if durable {
            self.write(unit).await
        } else {
            self.write_lazy(unit).await
        }
    }
}

/// Reads the grant under the write lock, checks the fence, writes what `merge` decides and the
/// event of its change of state, and answers with the row as written. Nothing is written when
/// the fence fails.
pub(super) fn fenced_write_in(
    conn: &Connection,
    sub: &str,
    expected_version: Option<i64>,
    at: OffsetDateTime,
    merge: impl FnOnce(GrantRecord) -> Merged,
) -> Result<(GrantRecord, Option<GrantEvent>)> {
    let held = read_grant(conn, sub)?.ok_or(StoreError::NotFound)?;
    check_fence(&held, expected_version)?;
    let held_version = held.version;
    let merged = merge(held);
    let grant = write_grant(conn, &merged.grant, Some(held_version))?;
    let event = match &merged.change {
        Some(change) => Some(append_event(conn, sub, change, at)?),
        None => None,
    };
    Ok((grant, event))
}

pub(super) fn read_grant(conn: &Connection, sub: &str) -> Result<Option<GrantRecord>> {
    one(conn, SELECT_GRANT, &args![sub], read::grant_alone)
}
